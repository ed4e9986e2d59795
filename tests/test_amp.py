"The GPU code path on the CPU: bf16 autocast, torch.compile and channels_last together train every method."
import math
import pytest, torch
from supercm_nb.methods import METHODS
from supercm_nb.train import make_config, build

@pytest.mark.parametrize('method', METHODS)
def test_amp_compile_channels_last(method):
    "A few steps of `method` with amp + compile + channels_last on CPU: it runs and every loss term is finite."
    torch._dynamo.reset()
    cfg = make_config('digits', method=method, steps=3, eval_every=3, amp=True, compile=True, channels_last=True, device='cpu')
    b = build(cfg, progress=False)
    assert b.learn.amp
    b.learn.fit()
    assert b.learn.step == 3
    assert b.learn.losses and all(math.isfinite(float(v.detach())) for v in b.learn.losses.values()), b.learn.losses
