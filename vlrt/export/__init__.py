"""Checkpoint loading, ONNX export, validation and bundle writing (needs torch: vlrt[export])."""
from vlrt.export.api import ExportResult, export_checkpoint
from vlrt.export.load import LoadedCheckpoint, load_checkpoint

__all__ = ["ExportResult", "LoadedCheckpoint", "export_checkpoint", "load_checkpoint"]
