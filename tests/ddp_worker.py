"""Worker for test_train.py's data-parallel tests: train a few steps and save losses, centroids and weights.

Run alone (one process, global batch) or under `torch.distributed.run` with 2 processes (half the batch each).
Arguments: OUT_JSON BATCH [METHOD ARCH]. With the BN-free 'flat' net one process and two compute the same thing;
with a BatchNorm net each rank writes OUT_JSON.rankN so the test can check that the ranks stay identical.
"""
import json, sys
import torch
from torch import nn
import torch.distributed as dist
from supercm_nb import models
from supercm_nb.learner import Callback
from supercm_nb.train import make_config, run, head_of


class Flat(nn.Module):
    "A BatchNorm-free backbone, so one process with the global batch and two with half each compute the same thing."
    def __init__(self, c, **kw):
        super().__init__(); self.net, self.out_features = nn.Sequential(nn.Flatten(), nn.Linear(c * 64, 32), nn.Tanh()), 32
    def forward(self, x): return self.net(x)


class RecordLoss(Callback):
    "Keep each step's total loss (averaged over ranks under DDP)."
    def __init__(self): self.losses = []
    def after_step(self, learn):
        l = learn.loss.detach().clone()
        if dist.is_initialized(): dist.all_reduce(l); l /= dist.get_world_size()
        self.losses.append(float(l))


def main(out_json, batch, method='supercm', arch='flat'):
    models.ARCHS['flat'] = lambda c, **kw: Flat(c)
    world = dist.get_world_size() if dist.is_initialized() else int(__import__('os').environ.get('WORLD_SIZE', '1'))
    rec = RecordLoss()
    cfg = make_config('digits', method=method, arch=arch, steps=5, eval_every=5, batch_labeled=batch // max(world, 1),
                      batch_unlabeled=batch // max(world, 1), augment=False, device='cpu', beta=1.0)
    r = run(cfg, progress=False, extra_cbs=[rec])
    rank = dist.get_rank() if dist.is_initialized() else 0
    mu = head_of(r.learner.model).centroids.mu
    net = getattr(r.learner.model, 'module', r.learner.model)
    w = next(iter(net.parameters()))
    bn = [b.running_mean.tolist() for b in net.modules() if isinstance(b, nn.BatchNorm2d)][:1]
    rec_ = {'losses': rec.losses, 'mu': mu.tolist(), 'w0': w.detach().flatten()[:50].tolist(), 'bn': bn,
            'terms': sorted(r.learner.losses)}
    if rank == 0: json.dump(rec_, open(out_json, 'w'))
    json.dump(rec_, open(f'{out_json}.rank{rank}', 'w'))
    if dist.is_initialized(): dist.destroy_process_group()


if __name__ == '__main__': main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:5])
