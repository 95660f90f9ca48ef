"""A corpus that checks encode_stream's two bounds: 600 paths, 4 in 5 bad in runs of 40. It counts
clips loaded and not yet yielded, and paths read ahead of the results; the CPU runtime's and the
GPU pipeline's tests both run it."""
import threading

from vlrt.errors import VlrtError

BATCH, IN_FLIGHT, N = 4, 6, 600


class BoundedCorpus:
    def __init__(self, make_clip):
        self.make_clip = make_clip  # path -> a clip whose embedding's first value is int(path)
        self.lock = threading.Lock()
        self.pulled = self.yielded = self.ahead = self.live = self.peak_live = 0

    def paths(self):
        for i in range(N):
            self.pulled += 1  # the generator runs in the consumer's thread, as yielding does
            self.ahead = max(self.ahead, self.pulled - self.yielded)
            yield str(i)

    def loader(self, path):
        if int(path) % 50 < 40:
            raise VlrtError(f"{path}: bad")
        with self.lock:
            self.live += 1
            self.peak_live = max(self.peak_live, self.live)
        return self.make_clip(path)

    def check(self, results) -> None:
        """Consume the results in order and assert what came out and both bounds."""
        out = []
        for r in results:
            self.yielded += 1
            with self.lock:
                self.live -= r.clip is not None
            out.append((r.path, r.error, None if r.embedding is None else float(r.embedding[0])))
        assert out == [(str(i), f"{i}: bad", None) if i % 50 < 40 else (str(i), None, i) for i in range(N)]
        assert BATCH <= self.peak_live <= IN_FLIGHT + BATCH - 1
        assert IN_FLIGHT <= self.ahead <= IN_FLIGHT + 2 * BATCH - 1
