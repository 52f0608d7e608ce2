"""Log-probabilities on disk give the same comparison as logits in memory, a view of some
windows reads those windows, and a released file is gone."""

from __future__ import annotations

import numpy as np
import pytest

from quantmill.logprobs import release, write
from quantmill.metrics import compare_logits, halves


def test_log_probs_on_disk_compare_as_logits_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 300, size=(10, 17))
    reference = rng.normal(scale=3, size=(10, 16, 300)).astype(np.float32)
    candidate = reference + rng.normal(scale=0.2, size=reference.shape).astype(np.float32)
    ref = write(tmp_path / "ref.f32", iter(reference))
    cand = write(tmp_path / "cand.f32", iter(candidate))
    assert len(ref) == 10 and ref.shape == (10, 16, 300)
    assert np.exp(ref.window(3)).sum(axis=-1) == pytest.approx(np.ones(16), rel=1e-5)

    in_memory, on_disk = compare_logits(reference, candidate, windows), compare_logits(ref, cand, windows)
    assert on_disk.secondary == in_memory.secondary and on_disk.quantized_metric == in_memory.quantized_metric

    part = halves(10)[1]
    assert compare_logits(ref[part], cand[part], windows[part]).secondary == \
        compare_logits(reference[part], candidate[part], windows[part]).secondary
    assert ref[part][[0]].rows == (int(part[0]),)
    assert ref.fingerprint() != ref[part].fingerprint()

    release(cand)
    assert not cand.path.exists() and ref.path.exists()
