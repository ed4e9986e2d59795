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
        res = [q.get(timeout=300) for _ in range(2 * len(CENTROID_MODES))]   # generous: the CI machine may be busy
        for p in procs: p.join(300)
    assert [p.exitcode for p in procs] == [0, 0], "a DDP worker did not exit cleanly"
    for mode, mu, counts in res:
        ref = LabelMeanCentroids(3, 2, mode=mode, momentum=0.5)
        for z, y in BATCHES[:2]: ref.update(z, y)
        torch.testing.assert_close(mu, ref.mu); torch.testing.assert_close(counts, ref.counts)


# ---- the collapse, measured (same setting as nbs/03_centroids.ipynb, section (a)) -----------------------------
import math
import torch.nn as nn
import torch.nn.functional as F
from supercm_nb.centroids import collapse_flags
from supercm_nb.cm_head import ClusteringModule
from supercm_nb.cm_loss import cm_loss
from supercm_nb.gmm import sample_blobs
from supercm_nb.models import SSLNet


def _toy(seed=0, k=4, n=800, per_class=2, std=1.5, radius=4.):
    "Blobs on a circle: pool (x, y), labelled indices, test set; as `toy_ssl` in the notebook."
    g = torch.Generator().manual_seed(seed)
    ang = torch.arange(k) * 2 * math.pi / k
    centers = radius * torch.stack([ang.cos(), ang.sin()], 1)
    tr, te = (sample_blobs(n, centers=centers, std=std, generator=g) for _ in range(2))
    pick = lambda c: torch.nonzero(tr.y == c)[:, 0][torch.randperm(int((tr.y == c).sum()), generator=g)[:per_class]]
    return tr.x, tr.y, torch.cat([pick(c) for c in range(k)]), te.x, te.y


@pytest.fixture(autouse=False)
def one_thread():
    "Tiny models: one thread is faster than two on a shared CPU (and avoids oversubscription)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train(kind, beta, steps, ce=True, seed=0, k=4, d=16):
    "Basic MLP + CM head, CE(labelled) + β·L_CM(all), Adam 1e-3; returns final test stats with accuracy."
    x, y, lab, xt, yt = _toy(seed)
    cents = CENTROIDS[kind](k, d)
    torch.manual_seed(seed)
    bb = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, d))
    model = SSLNet(bb, ClusteringModule(d, k, cents))
    opt, g = torch.optim.Adam(model.parameters(), 1e-3), torch.Generator().manual_seed(seed)
    xl, yl = x[lab], y[lab]
    for _ in range(steps):
        model.train()
        out = model(torch.cat([xl, x[torch.randint(len(x), (64,), generator=g)]]))
        cents.update(out.features[:len(yl)].detach(), yl)
        mu = cents.mu if cents.trainable else cents.mu.detach()
        loss = beta * cm_loss(out.features, out.gamma, mu, validate=False).total
        if ce: loss = loss + F.cross_entropy(out.logits[:len(yl)], yl)
        opt.zero_grad(); loss.backward(); opt.step()
    model.eval()
    with torch.no_grad(): out = model(xt)
    return {'acc': float((out.logits.argmax(1) == yt).float().mean()), **cluster_stats(out.features, out.gamma, cents.mu).to_dict()}


def test_gradient_centroids_collapse_label_means_do_not(one_thread):
    "Blobs, 2 labels/class, basic MLP, β=3, 1000 steps, seed 0 (notebook: grad 37% acc, 1.9 clusters; label means 93%, 4.0)."
    grad, lm = _train('grad', 3., 1000), _train('label_mean', 3., 1000)
    assert collapse_flags(grad, 4)['class_collapse'], grad          # fewer than K-1 = 3 effective clusters
    assert not any(collapse_flags(lm, 4).values()), lm
    assert lm['effective_clusters'] > 3.8
    assert lm['acc'] - grad['acc'] > 0.2, (lm['acc'], grad['acc'])   # ≥ 20 points more accurate
    assert grad['feature_norm'] < 0.7 * lm['feature_norm']          # and the gradient run's features shrink


def test_without_cross_entropy_both_collapse(one_thread):
    "β·L_CM alone: features of all points collapse to nearly one point whatever the centroids (label means need CE)."
    for kind in ('grad', 'label_mean'):
        st = _train(kind, 3., 200, ce=False)
        assert collapse_flags(st, 4)['feature_collapse'] and st['acc'] < 0.4, (kind, st)
