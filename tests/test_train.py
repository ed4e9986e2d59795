"Command-line and robustness tests of supercm_train: summary, every method, NaN, corrupt checkpoints, Ctrl-C, resume, DDP."
import json, math, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from supercm_nb.learner import Callback, NonFiniteLossError
from supercm_nb.runfiles import CheckpointError, load_checkpoint
from supercm_nb.methods import METHODS
from supercm_nb.train import make_config, run, main

HERE = Path(__file__).parent
PY = sys.executable
SUMMARY_KEYS = ('dataset', 'method', 'labels', 'seed', 'steps', 'best_step', 'val_acc', 'test_acc')


BIN = Path(PY).parent


def cli(*args, prog='supercm_train', **kw):
    "Run an installed console script (as a user would) in a subprocess."
    return subprocess.run([str(BIN/prog), *args], capture_output=True, text=True, **kw)


def test_cli_writes_run_folder(tmp_path):
    r = cli('--dataset', 'digits', '--labels', '50', '--method', 'ce', '--steps', '40', '--eval-every', '20',
            '--out', str(tmp_path/'a'), '--no-progress')
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path/'a'/'summary.json').read_text())
    assert all(k in s for k in SUMMARY_KEYS)
    assert 0 <= s['val_acc'] <= 1 and 0 <= s['test_acc'] <= 1 and s['steps'] == 40
    assert (tmp_path/'a'/'split.json').exists() and (tmp_path/'a'/'config.json').exists()
    assert len((tmp_path/'a'/'metrics.jsonl').read_text().splitlines()) == 2


@pytest.mark.parametrize('bad,msg', [(['--method', 'mixmatch'], 'Valid methods'), (['--dataset', 'imagenet'], 'Valid values'),
                                     (['--labels', '7'], 'multiple'), (['--recipe', 'nope'], 'Valid recipes'),
                                     (['--arch', 'resnet'], 'Valid values')])
def test_cli_refuses_unknown_values(tmp_path, bad, msg):
    r = cli('--steps', '2', '--out', str(tmp_path/'x'), '--no-progress', *bad)
    assert r.returncode != 0 and msg in r.stderr, r.stderr


class RecordLoss(Callback):
    def __init__(self): self.losses = []
    def after_step(self, learn): self.losses.append(float(learn.loss.detach()))


@pytest.mark.parametrize('method', METHODS)
def test_every_method_lowers_its_loss(method):
    rec = RecordLoss()
    cfg = make_config('digits', method=method, steps=20, eval_every=20, rampup=0.0, delta=0.3, batch_labeled=32, batch_unlabeled=32)
    r = run(cfg, progress=False, extra_cbs=[rec])
    first, last = sum(rec.losses[:5]) / 5, sum(rec.losses[-5:]) / 5
    assert last < first, (method, rec.losses)
    assert r.summary['steps'] == 20


class NaNAt(Callback):
    order = 6
    def after_loss(self, learn):
        if learn.step == 12: learn.losses['cm'] = learn.losses['cm'] * float('nan')


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = make_config('digits', method='supercm', steps=30, eval_every=5)
    with pytest.raises(NonFiniteLossError, match="'cm' was not finite at step 12"):
        run(cfg, out=tmp_path, progress=False, extra_cbs=[NaNAt()])
    sd = load_checkpoint(tmp_path/'last.pt')
    assert sd['step'] == 10 and all(torch.isfinite(v).all() for v in sd['model'].values() if v.is_floating_point())


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    cfg = make_config('digits', method='ce', steps=10, eval_every=5)
    run(cfg, out=tmp_path/'a', progress=False)
    # another configuration
    with pytest.raises(CheckpointError, match='another configuration'):
        run(make_config('digits', method='ce', steps=10, eval_every=5, lr=1e-2), out=tmp_path/'a', resume=True, progress=False)
    r = cli('--out', str(tmp_path/'a'), '--resume', '--lr', '0.5', '--no-progress')
    assert r.returncode != 0 and 'another configuration' in r.stderr, r.stderr
    # a truncated file
    p = tmp_path/'a'/'last.pt'; p.write_bytes(p.read_bytes()[:200])
    r = cli('--out', str(tmp_path/'a'), '--resume', '--no-progress')
    assert r.returncode != 0 and 'not a readable checkpoint' in r.stderr, r.stderr
    # a fresh run never overwrites a run folder
    r = cli('--dataset', 'digits', '--method', 'ce', '--steps', '10', '--out', str(tmp_path/'a'), '--no-progress')
    assert r.returncode != 0 and 'already holds a run' in r.stderr


def test_resume_is_exact(tmp_path):
    "20 steps in one go == 10 steps, Ctrl-C, `supercm_train --resume`, 10 more: bit-identical weights."
    cfg = make_config('digits', method='vat+supercm', steps=20, eval_every=10, ema=0.99)
    a = run(cfg, out=tmp_path/'a', progress=False)
    half = run(cfg, out=tmp_path/'b', progress=False, extra_cbs=[_StopAt(10)])
    assert half.learner.interrupted and load_checkpoint(tmp_path/'b'/'last.pt')['step'] == 10
    r = cli('--out', str(tmp_path/'b'), '--resume', '--no-progress')
    assert r.returncode == 0, r.stderr
    b = load_checkpoint(tmp_path/'b'/'last.pt')
    assert b['step'] == 20
    for k, p in a.learner.model.state_dict().items(): assert torch.equal(p, b['model'][k]), k


class _StopAt(Callback):
    "Simulate Ctrl-C after `n` steps."
    order = 50
    def __init__(self, n): self.n = n
    def after_step(self, learn):
        if learn.step == self.n: raise KeyboardInterrupt


def test_ctrl_c_saves_and_exits_cleanly(tmp_path):
    p = subprocess.Popen([str(BIN/'supercm_train'), '--dataset', 'digits', '--method', 'supercm',
                          '--steps', '100000', '--eval-every', '50', '--out', str(tmp_path), '--no-progress'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path/'metrics.jsonl').exists() and time.time() < deadline: time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert 'Traceback' not in err and 'continue with --resume' in out
    assert load_checkpoint(tmp_path/'last.pt')['step'] > 0


def test_ddp_gloo_matches_single_process(tmp_path):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    one = subprocess.run([PY, str(HERE/'ddp_worker.py'), str(tmp_path/'one.json'), '32'], capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([PY, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517',
                          str(HERE/'ddp_worker.py'), str(tmp_path/'two.json'), '32'], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path/f).read_text()) for f in ('one.json', 'two.json'))
    assert torch.allclose(torch.tensor(a['losses']), torch.tensor(b['losses']), atol=1e-5), (a['losses'], b['losses'])
    assert torch.allclose(torch.tensor(a['mu']), torch.tensor(b['mu']), atol=1e-5)
    assert torch.allclose(torch.tensor(a['w0']), torch.tensor(b['w0']), atol=1e-5)


def test_ddp_gloo_batchnorm_vat_supercm(tmp_path):
    "Two gloo ranks train a BatchNorm CNN with vat+supercm: finite losses, and the ranks' weights, BN statistics and centroids agree."
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    two = subprocess.run([PY, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29518',
                          str(HERE/'ddp_worker.py'), str(tmp_path/'bn.json'), '32', 'vat+supercm', 'cnn8'], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path/f'bn.json.rank{k}').read_text()) for k in (0, 1))
    assert {'ce', 'vat', 'cm'} <= set(r0['terms']) and all(map(math.isfinite, r0['losses']))
    assert r0['bn'] and r0['bn'] == r1['bn']   # DDP broadcasts rank 0's buffers: BN statistics agree
    for k in ('w0', 'mu'): assert torch.allclose(torch.tensor(r0[k]), torch.tensor(r1[k]), atol=1e-6), k


def test_bench_and_gpu_check_dry_run(tmp_path):
    r = cli('--arch', 'cnn8', '--methods', 'ce,supercm', '--steps', '2', prog='supercm_bench')
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in r.stdout.splitlines()]
    assert {'arch', 'method', 'batch', 'device', 'step_ms', 'img_per_s'} <= set(rows[0])
    assert any('overhead_of' in row for row in rows) and any('data_path_share_percent' in row for row in rows)
    r = cli('--dry-run', '--out', str(tmp_path/'g'), prog='supercm_gpu_check')
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path/'g'/'gpu_check.json').read_text())
    assert set(info['cifar10_jpeg_q75']) == {'ce', 'supercm'} and (tmp_path/'g'/'throughput.jsonl').exists()


@pytest.mark.parametrize('prog,args,msg', [
    ('supercm_train', ('--dataset', 'digits', '--labels', '5000', '--steps', '1'), 'use at most 1240 labels'),
    ('supercm_train', ('--dataset', 'digits', '--beta', '-1', '--steps', '1'), 'beta must be zero or positive'),
    ('supercm_train', ('--dataset', 'digits', '--delta', '-0.5', '--steps', '1'), 'delta must be zero or positive'),
    ('supercm_train', ('--dataset', 'digits', '--vat-eps', '-6', '--steps', '1'), 'vat_eps must be zero or positive'),
    ('supercm_bench', ('--arch', 'nosuch', '--steps', '1'), "unknown arch 'nosuch'"),
])
def test_bad_input_gets_one_line_error(prog, args, msg):
    "Impossible settings stop with a non-zero status and one line that says what was wrong, no traceback."
    r = cli(*args, prog=prog)
    assert r.returncode != 0 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_bad_data_files_get_one_line_error(tmp_path):
    "An .npz without the expected arrays, and a corrupt file in an image folder, end in one line each."
    import numpy as np
    np.savez(tmp_path/'bad.npz', x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(4, np.int64))
    (tmp_path/'imgs'/'train'/'a').mkdir(parents=True); (tmp_path/'imgs'/'test'/'a').mkdir(parents=True)
    (tmp_path/'imgs'/'train'/'a'/'x.png').write_bytes(b'garbage')
    for args, msg in [(('--dataset', 'npz', '--data-root', str(tmp_path/'bad.npz')), "lacks ['x_test', 'y_test']"),
                      (('--dataset', 'imagefolder', '--data-root', str(tmp_path/'imgs')), 'x.png is not a readable image')]:
        r = cli(*args, '--steps', '1', '--out', str(tmp_path/'run'))
        assert r.returncode != 0 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_compare_prints_progress_at_once(tmp_path):
    "The main job says what it will do within seconds, then prints one line per finished run."
    p = subprocess.Popen([str(BIN/'supercm_experiments'), 'compare', '--dataset', 'digits', '--labels', '50', '--seeds', '0', '--steps', '20',
                          '--out', str(tmp_path/'c'), '--workers', '1'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, 'OMP_NUM_THREADS': '1'})
    t0 = time.time(); first = p.stdout.readline()
    assert time.time() - t0 < 20 and first.startswith('2 runs, 0 already done, 2 to go'), first
    rest, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
    assert [l.split(':')[0] for l in rest.splitlines() if l.startswith('[')] == ['[1/2] digits 50 labels ce seed 0',
                                                                                  '[2/2] digits 50 labels supercm seed 0']


@pytest.mark.parametrize('method', ['ce', 'supercm'])
def test_cli_runs_the_demo_experiment(method):
    "`supercm_train --dataset digits ...` resolves to the config `make demo` (compare) trains, so it gives the same accuracies."
    from supercm_nb.experiments import grid
    from supercm_nb.train import arg_parser, resolve_config, config_dict
    for seed in (0, 1, 2):
        a = arg_parser().parse_args(['--dataset', 'digits', '--labels', '50', '--method', method, '--seed', str(seed)])
        demo = grid('digits', dataset='digits', labels=50, method=[method], seed=[seed])[0]
        assert config_dict(resolve_config(a)) == config_dict(demo)


def _own_image_folder(root, n_lab=6, n_unl=40, n_test=4):
    "A tiny image folder of 8×8 greyscale digits: train/<class>/ (labelled), unlabeled/ (no class) and test/<class>/."
    import numpy as np
    from PIL import Image
    from supercm_nb.data import load_dataset
    d = load_dataset('digits')
    for k in (0, 1):
        xk = d.x_train[d.y_train == k]
        for part, imgs in (('train', xk[:n_lab]), ('test', d.x_test[d.y_test == k][:n_test])):
            (root/part/str(k)).mkdir(parents=True, exist_ok=True)
            for i, im in enumerate(imgs): Image.fromarray(im[0].numpy()).save(root/part/str(k)/f'{i}.png')
        (root/'unlabeled'/'batch1').mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(xk[n_lab:n_lab + n_unl // 2]): Image.fromarray(im[0].numpy()).save(root/'unlabeled'/'batch1'/f'{k}_{i}.png')
    return root


def test_own_images_with_unlabelled_folder_train_and_predict(tmp_path):
    "An image folder with an unlabeled/ part trains with --labels all (no label hidden), and supercm_predict classifies."
    root = _own_image_folder(tmp_path/'imgs')
    from supercm_nb.data import load_dataset
    data = load_dataset('imagefolder', root)
    assert (len(data.y_train), data.n_unlabeled_given) == (52, 40), data
    r = cli('--dataset', 'imagefolder', '--data-root', str(root), '--labels', '5', '--steps', '2', '--out', str(tmp_path/'bad'))
    assert r.returncode != 0 and '--labels all' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    run = tmp_path/'run'
    r = cli('--dataset', 'imagefolder', '--data-root', str(root), '--labels', 'all', '--val', '2', '--method', 'supercm',
            '--arch', 'cnn8', '--steps', '20', '--eval-every', '10', '--batch-labeled', '4', '--batch-unlabeled', '8',
            '--out', str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    split = json.loads((run/'split.json').read_text())
    assert (len(split['labeled']), len(split['val'])) == (10, 2) and split['n_labels'] is None
    imgs = sorted((root/'test').rglob('*.png'))
    r = cli('--run', str(run), *map(str, imgs), prog='supercm_predict')
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(imgs) == 8
    for line, f in zip(lines, imgs):
        name, cls, prob = line.split('\t')
        assert name == str(f) and cls in ('0', '1') and 0 < float(prob) <= 1, line
    r = cli('--run', str(tmp_path/'nowhere'), str(imgs[0]), prog='supercm_predict')
    assert r.returncode != 0 and 'has no config.json' in r.stderr and 'Traceback' not in r.stderr, r.stderr


def test_npz_with_unlabelled_images(tmp_path):
    "An .npz may carry x_unlabeled: they join train with label -1 and only the given labels are used."
    import numpy as np
    from supercm_nb.data import load_dataset, make_split
    x = np.random.default_rng(0).integers(0, 256, (70, 8, 8), dtype=np.uint8)
    np.savez(tmp_path/'own.npz', x_train=x[:20], y_train=np.arange(20) % 2, x_test=x[20:30], y_test=np.arange(10) % 2,
             x_unlabeled=x[30:])
    d = load_dataset('npz', tmp_path/'own.npz')
    assert d.n_unlabeled_given == 40 and d.y_train[20:].eq(-1).all() and len(d.x_train) == 60
    s = make_split(d.y_train, None, 4, seed=0)
    assert len(s.labeled) == 16 and len(s.unlabeled) == 56 and bool((d.y_train[s.val] >= 0).all())
