"Tests for supercm_nb.centroids: hand-computed running means, gradients, DDP all-reduce, cluster_stats."
import math, os, tempfile
import pytest, torch
import torch.distributed as dist
import torch.multiprocessing as mp
from supercm_nb.centroids import (GradCentroids, LabelMeanCentroids, CENTROIDS, CENTROID_MODES,
                                  class_sums, cluster_stats)

BATCHES = [(torch.tensor([[1., 0], [3, 0], [0, 2]]), torch.tensor([0, 0, 1])),   # class 2 absent
           (torch.tensor([[5., 0], [0, 4], [6, 6]]), torch.tensor([0, 1, 2])),
           (torch.tensor([[2., 2]]), torch.tensor([2]))]                         # classes 0, 1 absent
EXPECTED = {'count': [[3., 0], [0, 3], [4, 4]],                  # plain running mean of every sample
            'cumulative': [[3.5, 0], [0, 3], [8 / 3, 8 / 3]],   # authors: (z̄ + (t-1)μ)/t, t global
            'ema': [[3.5, 0], [0, 3], [4, 4]]}                  # m=0.5, first sighting sets μ = z̄


@pytest.mark.parametrize('mode', CENTROID_MODES)
def test_hand_computed_running_mean(mode):
    lm = LabelMeanCentroids(3, 2, mode=mode, momentum=0.5)
    for z, y in BATCHES: lm.update(z, y)
    torch.testing.assert_close(lm.mu, torch.tensor(EXPECTED[mode]))
    torch.testing.assert_close(lm.counts, torch.tensor([3., 2, 2]))
    assert int(lm.t) == 3


@pytest.mark.parametrize('mode', CENTROID_MODES)
def test_absent_class_keeps_centroid(mode):
    lm = LabelMeanCentroids(3, 2, mode=mode, momentum=0.5)
    lm.update(*BATCHES[0])
    torch.testing.assert_close(lm.mu[2], torch.zeros(2))           # never seen: still the zero init
    before = lm.mu.clone()
    lm.update(*BATCHES[2])                                         # only class 2 present
    torch.testing.assert_close(lm.mu[:2], before[:2])


def test_cumulative_shrinks_late_class_count_does_not():
    a, b = LabelMeanCentroids(3, 2, mode='cumulative'), LabelMeanCentroids(3, 2, mode='count')
    for z, y in BATCHES[:2]: a.update(z, y); b.update(z, y)
    torch.testing.assert_close(a.mu[2], torch.tensor([3., 3]))      # (6,6) entered at t=2 → halved
    torch.testing.assert_close(b.mu[2], torch.tensor([6., 6]))


def test_count_mode_equals_mean_of_all_samples():
    torch.manual_seed(0)
    lm, zs, ys = LabelMeanCentroids(5, 4), [], []
    for _ in range(7):
        z, y = torch.randn(11, 4), torch.randint(0, 5, (11,))
        lm.update(z, y); zs.append(z); ys.append(y)
    z, y = torch.cat(zs), torch.cat(ys)
    torch.testing.assert_close(lm.mu, torch.stack([z[y == k].mean(0) for k in range(5)]))


def test_no_gradient_reaches_label_means():
    lm = LabelMeanCentroids(3, 2)
    z = torch.randn(4, 2, requires_grad=True)
    lm.update(z * 3, torch.tensor([0, 1, 2, 2]))
    assert not lm.mu.requires_grad and lm.mu.grad_fn is None and list(lm.parameters()) == []
    assert lm.trainable is False


def test_grad_centroids_get_gradient():
    gc = GradCentroids(3, 2)
    z, gamma = torch.randn(5, 2), torch.softmax(torch.randn(5, 3), 1)
    ((gamma[:, :, None] * (z[:, None] - gc.mu[None]) ** 2).sum() / z.numel()).backward()
    assert gc.mu.grad is not None and gc.mu.grad.abs().sum() > 0
    assert gc.trainable is True and list(gc.parameters())[0] is gc.mu
    gc.update(z, torch.tensor([0, 1, 2, 0, 1]))                     # no-op, same interface


def test_weights_equal_dropping_rows():
    torch.manual_seed(1)
    z, y, w = torch.randn(20, 3), torch.randint(0, 4, (20,)), (torch.rand(20) > 0.5).float()
    a, b = LabelMeanCentroids(4, 3), LabelMeanCentroids(4, 3)
    a.update(z, y, weights=w); b.update(z[w > 0], y[w > 0])
    torch.testing.assert_close(a.mu, b.mu)


def test_class_sums_and_errors():
    cs = class_sums(*BATCHES[0], n_classes=3)
    torch.testing.assert_close(cs.counts, torch.tensor([2., 1, 0]))
    torch.testing.assert_close(cs.sums, torch.tensor([[4., 0], [0, 2], [0, 0]]))
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\)'): class_sums(BATCHES[0][0], torch.tensor([0, 3, 1]), 3)
    with pytest.raises(ValueError, match='is not one of'): LabelMeanCentroids(3, 2, mode='mean')
    with pytest.raises(ValueError, match='momentum'): LabelMeanCentroids(3, 2, mode='ema', momentum=1.0)
    assert set(CENTROIDS) == {'grad', 'label_mean'}


def test_state_dict_resume():
    a = LabelMeanCentroids(3, 2, mode='cumulative')
    a.update(*BATCHES[0])
    b = LabelMeanCentroids(3, 2, mode='cumulative'); b.load_state_dict(a.state_dict())
    for m in (a, b): m.update(*BATCHES[1])
    torch.testing.assert_close(a.mu, b.mu); assert int(b.t) == 2


def test_cluster_stats_known_values():
    mu = torch.tensor([[0., 0], [1, 0], [0, 1], [1, 1]])
    z = torch.tensor([[2., 0], [0, 2], [-2, 0], [0, -2]])
    st = cluster_stats(z, torch.eye(4), mu)
    assert math.isclose(float(st.effective_clusters), 4, rel_tol=1e-5)
    assert math.isclose(float(st.min_centroid_dist), 0.5, rel_tol=1e-5)
    assert math.isclose(float(st.mean_centroid_dist), (4 + 2 * math.sqrt(2)) / 12, rel_tol=1e-5)
    assert math.isclose(float(st.feature_var), 2, rel_tol=1e-5)
    assert math.isclose(float(cluster_stats(z, torch.eye(4)[[1, 1, 1, 1]], mu).effective_clusters), 1, rel_tol=1e-5)
    assert set(st.to_dict()) >= {'effective_clusters', 'min_centroid_dist', 'feature_norm', 'feature_var'}


def _ddp_worker(rank, world, path, q):
    dist.init_process_group('gloo', init_method=f'file://{path}', rank=rank, world_size=world)
    try:
        for mode in CENTROID_MODES:
            lm = LabelMeanCentroids(3, 2, mode=mode, momentum=0.5)
            for z, y in BATCHES[:2]:                   # rank r gets every other row of each batch
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
        res = [q.get(timeout=60) for _ in range(2 * len(CENTROID_MODES))]
        for p in procs: p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    for mode, mu, counts in res:
        ref = LabelMeanCentroids(3, 2, mode=mode, momentum=0.5)
        for z, y in BATCHES[:2]: ref.update(z, y)
        torch.testing.assert_close(mu, ref.mu); torch.testing.assert_close(counts, ref.counts)
