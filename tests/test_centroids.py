"""Tests for supercm_nb.centroids that a notebook cannot hold: the DDP all-reduce, checked with two gloo processes.

Everything else (the hand-worked running means, absent classes, gradients, weights, resume, cluster_stats and the
collapse on blobs) is tested where it is explained, in nbs/03_centroids.ipynb, which `nbdev_test` runs."""
import os, tempfile
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from supercm_nb.centroids import LabelMeanCentroids, CENTROID_MODES

BATCHES = [(torch.tensor([[1., 0], [3, 0], [0, 2]]), torch.tensor([0, 0, 1])),   # class 2 absent
           (torch.tensor([[5., 0], [0, 4], [6, 6]]), torch.tensor([0, 1, 2]))]   # as in the notebook's worked example


def _ddp_worker(rank, world, path, q):
    dist.init_process_group('gloo', init_method=f'file://{path}', rank=rank, world_size=world)
    try:
        for mode in CENTROID_MODES:
            lm = LabelMeanCentroids(3, 2, mode=mode, momentum=0.5)
            for z, y in BATCHES:                       # rank r gets every other row of each batch
                lm.update(z[rank::world], y[rank::world])
            q.put((mode, lm.mu.clone(), lm.counts.clone()))
    finally:
        dist.destroy_process_group()


def test_ddp_all_reduce_matches_single_process():
    "Two gloo processes, each with half of every batch, end with the single-process centroids (all modes)."
    ctx = mp.get_context('spawn'); q = ctx.Queue()
    with tempfile.TemporaryDirectory() as d:
        procs = [ctx.Process(target=_ddp_worker, args=(r, 2, os.path.join(d, 'store'), q)) for r in range(2)]
        for p in procs: p.start()
        res = [q.get(timeout=300) for _ in range(2 * len(CENTROID_MODES))]   # generous: the CI machine may be busy
        for p in procs: p.join(300)
    assert [p.exitcode for p in procs] == [0, 0], "a DDP worker did not exit cleanly"
    for mode, mu, counts in res:
        ref = LabelMeanCentroids(3, 2, mode=mode, momentum=0.5)
        for z, y in BATCHES: ref.update(z, y)
        torch.testing.assert_close(mu, ref.mu); torch.testing.assert_close(counts, ref.counts)
