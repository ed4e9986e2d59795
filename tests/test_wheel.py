"""The package as a user who only imports it gets it: a wheel, installed into a fresh virtual environment with the
runtime requirements of settings.ini only (no nbdev, no dev extras), then `supercm_train` for a few steps on digits
and `supercm_predict` on the result. Takes about two minutes (torch is installed into the new environment)."""
import json, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).absolute().parents[1]
SOURCES = ('setup.py', 'settings.ini', 'README.md', 'supercm_nb')

def sh(*args, **kw):
    "Run a command; on failure show its output's tail."
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{args[:3]} failed:\n{r.stdout[-1500:]}\n{r.stderr[-3000:]}"
    return r

def test_wheel_in_a_fresh_venv(tmp_path):
    src = tmp_path/'src'; src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (ROOT/name).is_dir() else shutil.copy)(ROOT/name, src/name)
    sh(sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', tmp_path/'dist', src)
    wheel, = (tmp_path/'dist').glob('supercm_nb-*.whl')
    sh(sys.executable, '-m', 'venv', tmp_path/'venv')
    py, bin_ = tmp_path/'venv'/'bin'/'python', tmp_path/'venv'/'bin'
    sh(py, '-m', 'pip', 'install', '-q', wheel)
    missing = sh(py, '-c', "import importlib.util as u; print([m for m in ('nbdev', 'pytest', 'sphinx', 'jupyterlab') "
                           "if u.find_spec(m)])").stdout.strip()
    assert missing == '[]', f"dev tools in a runtime install: {missing}"
    run = tmp_path/'run'
    r = sh(bin_/'supercm_train', '--dataset', 'digits', '--steps', '30', '--eval-every', '15', '--out', run,
           '--no-progress', cwd=tmp_path)
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s['steps'] == 30 and s['dataset'] == 'digits' and (run/'best.pt').is_file()
    origin = sh(py, '-c', 'import supercm_nb; print(supercm_nb.__file__)', cwd=tmp_path).stdout
    assert str(tmp_path/'venv') in origin, origin
    from PIL import Image
    from supercm_nb.data import load_dataset
    Image.fromarray(load_dataset('digits').x_test[0, 0].numpy()).save(tmp_path/'d.png')
    r = sh(bin_/'supercm_predict', '--run', run, tmp_path/'d.png', cwd=tmp_path)
    assert r.stdout.startswith(str(tmp_path/'d.png') + '\t'), r.stdout
