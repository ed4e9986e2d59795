"Tests for supercm_nb.models (CPU, small inputs)."
import pytest
import torch
from torch import nn
from supercm_nb.centroids import LabelMeanCentroids
from supercm_nb.models import ARCHS, ModelOut, SSLNet, WideResNet, default_arch, make_model


def n_params(m): return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize('arch,c,s,d', [('cnn8', 1, 8, 128), ('cnn28', 1, 28, 128), ('cnn28s', 1, 28, 64), ('cnn32', 3, 32, 128),
                                        ('wrn28_2', 3, 32, 128), ('wrn28_2', 1, 28, 128)])
def test_forward_shapes(arch, c, s, d):
    m = make_model(arch, c, 10)
    out = m(torch.randn(2, c, s, s))
    assert isinstance(out, ModelOut) and isinstance(m, SSLNet)
    assert out.features.shape == (2, d) and out.logits.shape == (2, 10) and out.gamma.shape == (2, 10)
    assert torch.allclose(out.gamma.sum(1), torch.ones(2), atol=1e-5)
    assert torch.allclose(out.gamma, out.logits.softmax(1), atol=1e-6)


def test_mlp_flat_inputs():
    out = make_model('mlp', 2, 3)(torch.randn(7, 2))
    assert out.features.shape == (7, 128) and out.logits.shape == (7, 3)


def test_wrn28_2_parameter_count():
    net = make_model('wrn28_2', 3, 10, centroids=LabelMeanCentroids(10, 128))
    assert n_params(net.backbone) == 1_466_320          # see nbs/05_models.ipynb for the layer-by-layer sum
    assert n_params(net) == 1_467_610                   # + Linear(128, 10)
    assert n_params(make_model('wrn28_2', 3, 10)) == 1_467_610 + 1280   # gradient-trained centroids are parameters


def test_wrn28_8_features():
    bb = WideResNet(3, 28, 8)
    assert bb.out_features == 512 and n_params(bb) == 23_349_712       # ≈23.35 M


def test_wrn_details():
    bb = WideResNet(3, 28, 2)
    bns = [m for m in bb.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.001 for m in bns)       # TF decay 0.999
    assert [b.abr for b in bb.blocks] == [True] + [False] * 11  # activate-before-residual in the first block only
    with pytest.raises(ValueError, match="WRN depth must be 6n\\+4"): WideResNet(3, 27, 2)


def test_bn_momentum_override():
    m = make_model('cnn8', 1, 10, bn_momentum=0.2)
    assert {b.momentum for b in m.modules() if isinstance(b, nn.BatchNorm2d)} == {0.2}


def test_channels_last_same_function():
    torch.manual_seed(0)
    a = make_model('cnn32', 3, 10).eval()
    b = make_model('cnn32', 3, 10, channels_last=True).eval(); b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(a(x).logits, b(x.contiguous(memory_format=torch.channels_last)).logits, atol=1e-4)


def test_backward_reaches_backbone_and_encoder():
    m = make_model('cnn8', 1, 10, centroids=LabelMeanCentroids(10, 128))
    m(torch.randn(4, 1, 8, 8)).logits.sum().backward()
    assert m.backbone.body[0].weight.grad is not None and m.head.encoder.weight.grad is not None


def test_centroids_passed_through():
    c = LabelMeanCentroids(10, 128)
    assert make_model('cnn8', 1, 10, centroids=c).head.centroids is c


def test_unknown_arch_and_defaults():
    with pytest.raises(ValueError, match="unknown arch 'resnet'; valid: wrn28_2, wrn28_8, cnn8"): make_model('resnet', 3, 10)
    assert set(ARCHS) == {'wrn28_2', 'wrn28_8', 'cnn8', 'cnn28', 'cnn28s', 'cnn32', 'mlp'}
    assert [default_arch(s) for s in (8, 28, 32)] == ['cnn8', 'cnn28', 'wrn28_2'] and default_arch(32, small=True) == 'cnn32'
