"Fast checks of `supercm_nb.cm_loss`: the identity, the k-means reduction, the error messages and the gradients."
import re, pytest, torch
from supercm_nb.cm_loss import CMLoss, cm_loss, reconstruction, sparsity, merging, dirichlet_prior

torch.set_num_threads(1)


def _rel_close(a, b, rtol=1e-5):
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    assert (a - b).abs().max() <= rtol * max(float(b.abs().max()), 1e-12), f"{a} != {b}"


def _data(n=32, k=6, d=5, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    mu = torch.randn(k, d, generator=g, dtype=torch.float64) * scale
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    return x, logits, mu


def _weighted_sq_dist(x, gamma, mu):
    "The expanded form (1/(n·d)) Σ_i Σ_k γ_ik ‖x_i − μ_k‖²."
    return (gamma * (x[:, None] - mu[None]).pow(2).sum(-1)).sum() / x.numel()


@pytest.mark.parametrize('seed', range(5))
def test_identity_per_point(seed):
    x, logits, mu = _data(seed=seed)
    gamma = logits.softmax(1)
    lhs = (gamma * (x[:, None] - mu[None]).pow(2).sum(-1)).sum(1)
    rec = (x - gamma @ mu).pow(2).sum(1)
    spa = (gamma * (1 - gamma)) @ mu.pow(2).sum(1)
    G = mu @ mu.T
    mer = -torch.einsum('nk,kl,nl->n', gamma, G - torch.diag(G.diagonal()), gamma)
    _rel_close(rec + spa + mer, lhs)


@pytest.mark.parametrize('seed', range(5))
def test_total_equals_weighted_sq_dist(seed):
    x, logits, mu = _data(seed=seed)
    gamma = logits.softmax(1)
    L = cm_loss(x, gamma, mu)
    assert isinstance(L, CMLoss)
    _rel_close(L.total, _weighted_sq_dist(x, gamma, mu))
    _rel_close(L.total, L.reconstruction + L.sparsity + L.merging + L.dirichlet_prior)
    assert L.dirichlet_prior.item() == 0.0


def test_terms_are_the_exported_functions():
    x, logits, mu = _data()
    gamma = logits.softmax(1)
    alpha = torch.linspace(1, 4, mu.shape[0], dtype=torch.float64)
    L = cm_loss(x, gamma, mu, alpha)
    for name, value in [('reconstruction', reconstruction(x, gamma, mu)), ('sparsity', sparsity(gamma, mu)),
                        ('merging', merging(gamma, mu)), ('dirichlet_prior', dirichlet_prior(gamma, alpha))]:
        _rel_close(getattr(L, name), value)
    _rel_close(L.dirichlet_prior, ((1 - alpha) * torch.log(gamma.mean(0) + 1e-10)).sum())
    assert all(v.ndim == 0 for v in L.as_dict().values())


def test_kmeans_reduction():
    x, logits, mu = _data(n=50, seed=3)
    labels = torch.cdist(x, mu).argmin(1)
    hard = torch.nn.functional.one_hot(labels, mu.shape[0]).double()
    L = cm_loss(x, hard, mu)
    assert L.sparsity.item() == 0.0 and L.merging.item() == 0.0
    _rel_close(L.total, (x - mu[labels]).pow(2).sum() / x.numel())


def test_gradients_match_expanded_form():
    "Autograd through cm_loss equals autograd through the expanded form, for x, μ and the logits of γ."
    x, logits, mu = _data(seed=7)
    grads = []
    for f in (lambda x, th, mu: cm_loss(x, th.softmax(1), mu).total,
              lambda x, th, mu: _weighted_sq_dist(x, th.softmax(1), mu)):
        ins = [t.clone().requires_grad_() for t in (x, logits, mu)]
        grads.append(torch.autograd.grad(f(*ins), ins))
    for a, b in zip(*grads): _rel_close(a, b)


def test_gradcheck_with_prior():
    x, logits, mu = _data(n=6, k=3, d=2, seed=1)
    alpha = torch.tensor([1.5, 2.0, 3.0], dtype=torch.float64)
    f = lambda x, th, mu: cm_loss(x, th.softmax(1), mu, alpha, validate=False).total
    assert torch.autograd.gradcheck(f, [t.clone().requires_grad_() for t in (x, logits, mu)])


def test_no_host_sync_when_not_validating():
    "On meta tensors (shapes, no values) anything that reads a value fails: validate=False must not."
    x, logits, mu = (t.to('meta').float() for t in _data(n=8, k=3, d=2))
    gamma = logits.softmax(1)
    L = cm_loss(x, gamma, mu, alpha=torch.full((3,), 2.0, device='meta'), validate=False)
    assert L.total.shape == ()
    with pytest.raises(Exception): cm_loss(x, gamma, mu, validate=True)


@pytest.mark.parametrize('args, kw, msg', [
    (lambda x, g, m: (x[0], g, m), {}, 'x must be a 2-D tensor'),
    (lambda x, g, m: (x, g[:5], m), {}, 'gamma must be (n,K) = (32,6)'),
    (lambda x, g, m: (x, g, m[:, :2]), {}, 'mu must be (K,d) with d = 5'),
    (lambda x, g, m: (x, g * 2, m), {}, 'rows of gamma must sum to 1'),
    (lambda x, g, m: (x, g - 0.5, m), {}, 'gamma has negative entries'),
    (lambda x, g, m: (x, g, m), {'alpha': 0.5}, 'alpha must be >= 1'),
    (lambda x, g, m: (x, g, m), {'alpha': torch.tensor([1, 1, 1, 1, 1, .9])}, 'alpha must be >= 1'),
    (lambda x, g, m: (x, g, m), {'alpha': torch.ones(2)}, 'alpha must be a number or a (6,) tensor'),
])
def test_errors(args, kw, msg):
    x, logits, mu = _data()
    with pytest.raises(ValueError, match=re.escape(msg)):
        cm_loss(*args(x, logits.softmax(1), mu), **kw)
