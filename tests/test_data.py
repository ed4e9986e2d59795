"Tests for supercm_nb.data on tiny fake data (CPU, no network, no ../shared)."
import json
import numpy as np
import pytest
import torch
from PIL import Image
from supercm_nb.data import (DATASETS, AugmentConfig, Batch, ImageData, Normalizer, SSLBatches, SSLSplit, default_val_size,
                             eval_set, fit_zca, load_dataset, make_split, shift_flip)
import supercm_nb.data as D

K, H = 4, 8


def fake_arrays(n_train=120, n_test=20, c=3, seed=0):
    "Random uint8 images whose pixels carry the class, labels 0..K-1 in equal numbers."
    r = np.random.RandomState(seed)
    ytr, yte = np.arange(n_train) % K, np.arange(n_test) % K
    xtr = r.randint(0, 256, (n_train, H, H, c)).astype(np.uint8)
    xte = r.randint(0, 256, (n_test, H, H, c)).astype(np.uint8)
    return xtr, ytr, xte, yte


@pytest.fixture
def npz_path(tmp_path):
    xtr, ytr, xte, yte = fake_arrays()
    p = tmp_path / 'fake.npz'
    np.savez(p, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return p


@pytest.fixture
def data(npz_path): return load_dataset('npz', npz_path)


@pytest.fixture
def split(data): return make_split(data.y_train, n_labels=8, n_val=20, seed=0, dataset='npz')


# ---------- datasets

def test_npz_loads_as_uint8_nchw(data):
    assert isinstance(data, ImageData)
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (120, 3, H, H)
    assert data.y_train.dtype == torch.int64 and data.x_test.shape == (20, 3, H, H)
    assert data.classes == ['0', '1', '2', '3'] and data.flip is False
    assert len(data.mean) == 3 and all(0.4 < m < 0.6 for m in data.mean)


def test_npz_grey_and_float(tmp_path):
    xtr, ytr, xte, yte = fake_arrays(c=1)
    p = tmp_path / 'g.npz'
    np.savez(p, x_train=xtr[..., 0] / 255., y_train=ytr, x_test=xte[..., 0] / 255., y_test=yte)
    d = load_dataset('npz', p)
    assert d.x_train.shape == (120, 1, H, H) and torch.equal(d.x_train[:, 0], torch.from_numpy(xtr[..., 0]))


def test_digits():
    d = load_dataset('digits')
    assert d.shape == (1, 8, 8) and d.x_train.dtype == torch.uint8 and int(d.x_train.max()) == 255
    assert (len(d.x_train), len(d.x_test)) == (1442, 355) and d.flip is False
    assert torch.equal(load_dataset('digits').x_test, d.x_test)      # fixed split


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'; valid names: digits, mnist, fashion_mnist"):
        load_dataset('cifar11')


@pytest.mark.parametrize('name,folder', [('cifar10', 'cifar-10-batches-py'), ('mnist', 'MNIST/raw'), ('svhn', '.')])
def test_missing_torchvision_data(tmp_path, name, folder):
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(name, root=tmp_path)
    msg = str(e.value)
    assert f"dataset {name!r}" in msg and str(tmp_path) in msg and "download=True" in msg and "python -c" in msg
    assert "Dataset not found or corrupted" not in msg


def test_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file at .*nope.npz.*numpy.savez"): load_dataset('npz', tmp_path / 'nope.npz')
    with pytest.raises(ValueError, match="pass root="): load_dataset('npz')
    p = tmp_path / 'bad.npz'
    np.savez(p, x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.zeros(3))
    with pytest.raises(ValueError, match=r"lacks \['x_test', 'y_test'\]"): load_dataset('npz', p)
    np.savez(p, x_train=np.zeros((3, 4, 4)) + 2., y_train=np.zeros(3), x_test=np.zeros((1, 4, 4)), y_test=np.zeros(1))
    with pytest.raises(ValueError, match=r"float images must lie in \[0,1\]"): load_dataset('npz', p)
    np.savez(p, x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.zeros(2), x_test=np.zeros((1, 4, 4), np.uint8), y_test=np.zeros(1))
    with pytest.raises(ValueError, match="3 train images but 2 labels"): load_dataset('npz', p)


def write_folder(root, n=3, size=(H, H)):
    for s, m in (('train', n), ('test', 1)):
        for c in ('cat', 'dog'):
            (root / s / c).mkdir(parents=True, exist_ok=True)
            for i in range(m):
                a = np.full((*size, 3), 40 if c == 'cat' else 200, np.uint8); a[0, 0] = i
                Image.fromarray(a).save(root / s / c / f'{i}.png')


def test_imagefolder_and_cache(tmp_path, monkeypatch):
    root = tmp_path / 'imgs'; write_folder(root)
    d = load_dataset('imagefolder', root)
    assert d.classes == ['cat', 'dog'] and d.x_train.shape == (6, 3, H, H) and d.flip is True
    assert d.y_train.tolist() == [0, 0, 0, 1, 1, 1] and int(d.x_train[3, 0, 1, 1]) == 200
    cache = tmp_path / 'imgs.decoded.npz'
    assert cache.is_file() and not list(tmp_path.glob('.*.tmp'))
    def boom(*a): raise AssertionError('decoded again although cached')
    monkeypatch.setattr(D, 'decode_images', boom)
    d2 = load_dataset('imagefolder', root)                              # from the cache
    assert torch.equal(d2.x_train, d.x_train) and d2.classes == d.classes
    monkeypatch.undo()
    Image.fromarray(np.zeros((H, H, 3), np.uint8)).save(root / 'train' / 'dog' / '9.png')   # listing changed → rebuilt
    assert len(load_dataset('imagefolder', root).y_train) == 7


def test_imagefolder_unlabelled_images_take_the_train_channels(tmp_path):
    "A greyscale image in unlabeled/ is read as RGB like the (RGB) training images, with label -1."
    root = tmp_path / 'imgs'; write_folder(root)
    (root / 'unlabeled').mkdir(); Image.fromarray(np.full((H, H), 90, np.uint8)).save(root / 'unlabeled' / 'grey.png')
    d = load_dataset('imagefolder', root)
    assert d.x_train.shape == (7, 3, H, H) and d.y_train[-1] == -1 and d.x_train[-1].eq(90).all() and d.n_unlabeled_given == 1


def test_imagefolder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no folder .*train; expected .*train/<class>/\*"):
        load_dataset('imagefolder', tmp_path)
    root = tmp_path / 'r'; write_folder(root)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(root / 'train' / 'cat' / 'odd.png')
    with pytest.raises(ValueError, match="differ in size"): load_dataset('imagefolder', root)
    (root / 'train' / 'cat' / 'odd.png').write_bytes(b'not an image')
    with pytest.raises(ValueError, match=r"odd.png is not a readable image \(UnidentifiedImageError\); remove or replace it"):
        load_dataset('imagefolder', root)
    with pytest.raises(ValueError, match="pass root="): load_dataset('imagefolder')


def test_default_val_size():
    assert default_val_size('cifar10') == 5000 and default_val_size('svhn') == 7326 and default_val_size('digits') == 200
    assert default_val_size('npz', 1200) == 120
    with pytest.raises(ValueError, match="needs n_train"): default_val_size('npz')


# ---------- split

def test_split_balanced_and_disjoint(data, split):
    y = data.y_train
    assert torch.equal(y[split.labeled].bincount(minlength=K), torch.full((K,), 2))
    assert not set(split.val.tolist()) & set(split.unlabeled.tolist())
    assert len(split.val) == 20 and len(split.unlabeled) == 100
    assert set(split.labeled.tolist()) <= set(split.unlabeled.tolist())
    ex = make_split(y, 8, 20, 0, labeled_in_unlabeled=False)
    assert not set(ex.labeled.tolist()) & set(ex.unlabeled.tolist()) and len(ex.unlabeled) == 92


def test_split_deterministic(data, split):
    again = make_split(data.y_train, 8, 20, 0)
    for f in ('labeled', 'unlabeled', 'val'): assert torch.equal(getattr(again, f), getattr(split, f))
    assert not torch.equal(make_split(data.y_train, 8, 20, 1).val, split.val)


def test_split_errors(data):
    y = data.y_train
    with pytest.raises(ValueError, match="n_labels=10 must be a positive multiple of the 4 classes"): make_split(y, 10, 20, 0)
    with pytest.raises(ValueError, match="n_labels=2 must be a positive multiple of the 4 classes"): make_split(y, 2, 20, 0)
    bal = torch.arange(40) % 4
    rare = torch.tensor([0] * 20 + [1] * 20 + [2] * 20 + [3] * 3)
    with pytest.raises(ValueError, match="n_labels=16 needs 4 images per class but class 3 has only 3 left"): make_split(rare, 16, 0, 0)
    with pytest.raises(ValueError, match="leave no unlabelled images"): make_split(bal, 40, 0, 0, labeled_in_unlabeled=False)
    with pytest.raises(ValueError, match="n_val=-1 must be zero or positive"): make_split(y, 8, -1, 0)
    full = make_split(bal, 40, 0, 0)   # every non-validation image labelled: a fully supervised ceiling
    assert torch.equal(torch.sort(full.labeled).values, full.unlabeled)


def test_split_save_load(tmp_path, data, split):
    p = split.save(tmp_path / 'sub' / 'split.json')
    assert p.stat().st_size < 2000 and not list(p.parent.glob('.*.tmp'))
    s2 = SSLSplit.load(p)
    for f in ('labeled', 'unlabeled', 'val'): assert torch.equal(getattr(s2, f), getattr(split, f))
    assert (s2.dataset, s2.n_labels, s2.n_val, s2.seed, s2.n_train) == ('npz', 8, 20, 0, 120)
    ex = make_split(data.y_train, 8, 20, 0, labeled_in_unlabeled=False)
    assert torch.equal(SSLSplit.load(ex.save(tmp_path / 'ex.json')).unlabeled, ex.unlabeled)
    (tmp_path / 'x.json').write_text(json.dumps({'a': 1}))
    with pytest.raises(ValueError, match="is not a saved SSLSplit"): SSLSplit.load(tmp_path / 'x.json')


def test_split_for_other_data(data, split):
    other = load_dataset('digits')
    with pytest.raises(ValueError, match="was made for another training set"): SSLBatches(other, split)
    with pytest.raises(ValueError, match="was made for another training set"): eval_set(other, split, 'val')


# ---------- augmentation and batches

def test_shift_flip_matches_pad_and_crop():
    x = torch.randn(3, 2, 6, 6)
    dy, dx, fl = torch.tensor([2, -2, 0]), torch.tensor([-1, 2, 0]), torch.tensor([True, False, True])
    out = shift_flip(x, dy, dx, fl)
    for i in range(3):                       # reference: mirror, reflect-pad by 2, crop at the shifted window
        src = torch.nn.functional.pad((x[i].flip(-1) if fl[i] else x[i])[None], (2, 2, 2, 2), mode='reflect')[0]
        assert torch.equal(out[i], src[:, 2 + dy[i]:8 + dy[i], 2 + dx[i]:8 + dx[i]])


def test_batch_shapes_dtypes(data, split):
    bs = SSLBatches(data, split, batch_labeled=6, batch_unlabeled=10, strong=True)
    b = next(bs)
    assert isinstance(b, Batch) and bs.x.dtype == torch.uint8
    assert b.xl.shape == (6, 3, H, H) and b.xu.shape == (10, 3, H, H) and b.xu_strong.shape == (10, 3, H, H)
    assert b.xl_clean.shape == b.xl.shape and b.xl.dtype == torch.float32 and b.yl.dtype == torch.int64
    assert torch.equal(b.yl, data.y_train[b.il]) and set(b.iu.tolist()) <= set(split.unlabeled.tolist())
    assert torch.allclose(b.xl_clean, Normalizer.from_data(data)(data.x_train[b.il]))
    assert next(SSLBatches(data, split)).xu_strong is None


def test_labelled_batches_balanced(data, split):
    bs = SSLBatches(data, split, batch_labeled=8, batch_unlabeled=4)
    for _ in range(3):                                   # batch = labelled set: every class twice per batch
        assert torch.equal(next(bs).yl.bincount(minlength=K), torch.full((K,), 2))
    big = next(SSLBatches(data, split, batch_labeled=24))  # larger than the labelled set: repeated passes
    assert torch.equal(big.yl.bincount(minlength=K), torch.full((K,), 6))


def test_unlabelled_pass_covers_set(data, split):
    bs = SSLBatches(data, split, batch_labeled=2, batch_unlabeled=25)
    seen = torch.cat([next(bs).iu for _ in range(4)])
    assert sorted(seen.tolist()) == sorted(split.unlabeled.tolist())


def test_same_seed_same_batches(data, split):
    a, b, c = (SSLBatches(data, split, seed=s, strong=True) for s in (5, 5, 6))
    for _ in range(3):
        x, y, z = next(a), next(b), next(c)
        for f in ('xl', 'yl', 'xu', 'xu_strong', 'xl_clean', 'il', 'iu'): assert torch.equal(getattr(x, f), getattr(y, f))
    assert not torch.equal(x.xu, z.xu)


def test_state_dict_resume(data, split):
    a = SSLBatches(data, split, batch_labeled=6, batch_unlabeled=30, seed=1, strong=True)
    for _ in range(5): next(a)                            # crosses pass boundaries of both samplers
    sd = a.state_dict()
    sd = torch.load(__import__('io').BytesIO(_dump(sd)), weights_only=True)   # survives a save/load round trip
    want = [next(a) for _ in range(6)]
    b = SSLBatches(data, split, batch_labeled=6, batch_unlabeled=30, seed=123, strong=True)
    b.load_state_dict(sd)
    for x, y in zip(want, [next(b) for _ in range(6)]):
        for f in ('xl', 'yl', 'xu', 'xu_strong', 'il', 'iu'): assert torch.equal(getattr(x, f), getattr(y, f))
    assert a.step == b.step == 11


def _dump(sd):
    import io
    buf = io.BytesIO(); torch.save(sd, buf); return buf.getvalue()


def one_image_data(n=64):
    "n copies of one asymmetric image, so any difference between augmented copies comes from the augmentation."
    img = torch.arange(H * H, dtype=torch.uint8).view(1, 1, H, H) * 3
    x = img.expand(n, 3, H, H).contiguous()
    y = torch.arange(n) % K
    return D._image_data('one', x, y, x[:4], y[:4], [str(k) for k in range(K)], flip=True)


def test_augmentation_is_per_sample():
    d = one_image_data()
    sp = make_split(d.y_train, 8, 0, 0)
    cfg = AugmentConfig(flip=True, translate=2, noise=0.)
    b = next(SSLBatches(d, sp, batch_labeled=8, batch_unlabeled=64, augment=cfg))
    distinct = {tuple(v.flatten().tolist()) for v in b.xu}
    assert len(distinct) > 20                            # 5×5 shifts × 2 flips = 50 possibilities per image
    b2 = next(SSLBatches(d, sp, batch_labeled=8, batch_unlabeled=64, augment=AugmentConfig(per_sample=False, noise=0.)))
    assert len({tuple(v.flatten().tolist()) for v in b2.xu}) == 1   # the authors' per-batch draw
    noisy = next(SSLBatches(d, sp, batch_unlabeled=64, augment=AugmentConfig(flip=False, translate=0, noise=0.15)))
    r = noisy.xu - Normalizer.from_data(d)(d.x_train[:64])     # the noise alone
    assert abs(r.std().item() - 0.15) < 0.01 and not torch.equal(r[0], r[1])


def test_no_flip_when_data_forbids(data, split):
    d = one_image_data(); d.flip = False
    sp = make_split(d.y_train, 8, 0, 0)
    b = next(SSLBatches(d, sp, batch_unlabeled=64, augment=AugmentConfig.for_data(d, translate=0, noise=0.)))
    assert torch.equal(b.xu, b.xu[:1].expand_as(b.xu))
    assert AugmentConfig.for_data(load_dataset('digits')).flip is False


def test_strong_augmentation_per_sample():
    d = one_image_data()
    sp = make_split(d.y_train, 8, 0, 0)
    b = next(SSLBatches(d, sp, batch_unlabeled=64, strong=True))
    assert len({tuple(v.flatten().tolist()) for v in b.xu_strong}) == 64
    assert torch.isfinite(b.xu_strong).all()
    assert (b.xu_strong == 0).flatten(1).any(1).float().mean() > 0.9      # cutout (filled with the mean = 0)


def test_translate_too_large(data, split):
    with pytest.raises(ValueError, match="must be smaller than the image side 8"):
        SSLBatches(data, split, augment=AugmentConfig(translate=8))


def test_channels_last(data, split):
    b = next(SSLBatches(data, split, channels_last=True))
    assert b.xl.is_contiguous(memory_format=torch.channels_last)


def test_zca_normalizer(data, split):
    nz = fit_zca(data.x_train, eps=1e-1)
    b = next(SSLBatches(data, split, normalize=nz))
    assert b.xl.shape == (50, 3, H, H) and torch.isfinite(b.xl).all()


# ---------- evaluation sets

def test_eval_set(data, split):
    v, t = eval_set(data, split, 'val'), eval_set(data, part='test')
    assert v.x.shape == (20, 3, H, H) and v.x.dtype == torch.float32 and torch.equal(v.y, data.y_train[split.val])
    assert len(t) == 20 and torch.allclose(t.x, Normalizer.from_data(data)(data.x_test))
    assert [len(c) for c in t.batches(8)] == [8, 8, 4]
    assert len(eval_set(data, split, 'labeled')) == 8
    with pytest.raises(ValueError, match="needs the split"): eval_set(data, None, 'val')
    with pytest.raises(ValueError, match="use one of"): eval_set(data, split, 'dev')


def test_every_dataset_name_loads_or_says_what_is_missing(tmp_path):
    "Each name in DATASETS is handled: digits loads; the others, without files, raise an error naming the dataset."
    assert load_dataset('digits').name == 'digits'
    for name in DATASETS:
        if name == 'digits': continue
        with pytest.raises((FileNotFoundError, ValueError), match=name): load_dataset(name, root=tmp_path/'empty')


def test_failed_download_names_dataset(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    class Offline:
        def __init__(self, root, download=False, **kw):
            if download: raise OSError('network is unreachable')
            raise RuntimeError('Dataset not found or corrupted. You can use download=True to download it')
    monkeypatch.setattr(tvd, 'CIFAR100', Offline)
    with pytest.raises(FileNotFoundError, match="dataset 'cifar100'.*download failed: OSError: network is unreachable"):
        load_dataset('cifar100', root=tmp_path, download=True)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"): load_dataset('cifar100', root=tmp_path)


def test_cifar10_jpeg_from_archive_and_folder(tmp_path):
    "'cifar10_jpeg' reads the extracted folder or the .tar.xz (extracted once, beside it); a wrong root says what to pass."
    import tarfile
    from supercm_nb.bench import fake_imagefolder
    src = fake_imagefolder(tmp_path/'src'/'cifar10-jpeg-q75', n_per_class=2)
    archive = tmp_path/'cifar10-jpeg-q75.tar.xz'
    with tarfile.open(archive, 'w:xz') as t:
        for part in ('train', 'test'): t.add(src/part, arcname=part)
    d = load_dataset('cifar10_jpeg', root=archive)
    assert d.name == 'cifar10_jpeg' and tuple(d.x_train.shape) == (20, 3, 32, 32) and len(d.classes) == 10
    assert (tmp_path/'cifar10-jpeg-q75'/'train').is_dir()
    assert load_dataset("cifar10_jpeg", root=tmp_path).x_test.shape[0] == 30   # a root holding the archive (extracted beside it)
    with pytest.raises(FileNotFoundError, match="no train/ and test/ folders"): load_dataset('cifar10_jpeg', root=tmp_path/'nothing')
