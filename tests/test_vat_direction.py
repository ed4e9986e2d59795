"VAT's power-iteration direction in float32 agrees with a float64 computation at the package default ξ, and not at ξ=1e-6."
import pytest, torch
from supercm_nb.data import load_dataset, make_split, SSLBatches, default_val_size
from supercm_nb.models import make_model
from supercm_nb.methods import VAT, direction_cosine

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def model_and_batch():
    "The small digits CNN (train mode, fresh init) and a batch of 32 labelled + 32 unlabelled digits."
    data = load_dataset('digits')
    split = make_split(data.y_train, n_labels=50, n_val=default_val_size('digits'), seed=0, dataset='digits')
    b = next(SSLBatches(data, split, 32, 32, seed=0))
    torch.manual_seed(0)
    return make_model('cnn8', 1, 10).train(), torch.cat([b.xl, b.xu])


def test_default_xi_matches_float64(model_and_batch):
    model, x = model_and_batch
    cos = direction_cosine(model, x, VAT().xi)
    assert cos.shape == (len(x),)
    assert cos.min() >= 0.99, f"float32 VAT direction at the default xi={VAT().xi} is off the float64 one: {cos}"


def test_published_xi_fails_in_float32(model_and_batch):
    "The check above can fail: ξ=1e-6 in float32 (the published setting) loses the direction."
    model, x = model_and_batch
    cos = direction_cosine(model, x, 1e-6)
    assert cos.mean() < 0.9, f"expected xi=1e-6 in float32 to lose the direction, got mean cosine {cos.mean():.4f}"
