"""The deployment side: bundles, tokenizer, backends. Nothing here imports torch or vlrt.export."""
