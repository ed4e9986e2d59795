"""Each notebook as Colab runs it: alone in an empty folder, in a fresh Python environment, with `google.colab` imported.

The first cell of every notebook then clones the repository (here `SUPERCM_NB_SOURCE`, this checkout's committed
state), installs it with pip into that environment and moves into the clone's `nbs/`; the cells not flagged `slow`,
`cuda` or `notest` then run in order. The environment is a new virtual environment that sees this one's packages
(torch, Jupyter) through a `.pth` file, so the package itself comes only from the install cell.
"""
import os, shutil, subprocess, sys, sysconfig
from pathlib import Path
import pytest

ROOT = Path(__file__).absolute().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))
SKIP_FLAGS = {'slow', 'cuda', 'notest'}

@pytest.fixture(scope='module')
def colab_python(tmp_path_factory):
    "A fresh venv that imports a fake `google.colab` at start-up and has a Jupyter kernel spec of its own."
    if shutil.which('git') is None: pytest.skip('git is needed to clone the repository')
    base = tmp_path_factory.mktemp('colab_env')
    subprocess.run([sys.executable, '-m', 'venv', str(base/'venv')], check=True)
    py = base/'venv'/'bin'/'python'
    site = Path(subprocess.run([str(py), '-c', "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site/'zz_parent_env.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    (site/'google'/'colab').mkdir(parents=True)
    (site/'google'/'colab'/'__init__.py').write_text('"A stand-in for Colab\'s module: only its presence matters."\n')
    (site/'zzz_fake_colab.pth').write_text('import google.colab\n')
    spec = base/'jupyter'/'kernels'/'python3'; spec.mkdir(parents=True)
    (spec/'kernel.json').write_text('{"argv": ["%s", "-m", "ipykernel_launcher", "-f", "{connection_file}"], '
                                    '"display_name": "colab", "language": "python"}' % py)
    return base

def runnable(cell) -> bool:
    "Whether a code cell runs here: not flagged slow, cuda or notest, and not `#| eval: false`."
    lines = [l[3:].strip() for l in cell.source.splitlines() if l.startswith('#|')]
    return not any(l in SKIP_FLAGS or l.replace(' ', '') == 'eval:false' for l in lines)

@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_alone_as_in_colab(name, colab_python, tmp_path, monkeypatch):
    nbformat = pytest.importorskip('nbformat'); nbclient = pytest.importorskip('nbclient')
    shutil.copy(ROOT/'nbs'/name, tmp_path/name)
    nb = nbformat.read(tmp_path/name, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type != 'code' or runnable(c)]
    assert 'google.colab' in nb.cells[0].source, f'{name}: the first cell must be the Colab install cell'
    monkeypatch.setenv('SUPERCM_NB_SOURCE', str(ROOT))
    monkeypatch.setenv('JUPYTER_PATH', str(colab_python/'jupyter'))
    monkeypatch.setenv('PIP_NO_BUILD_ISOLATION', '0')  # build with this environment's setuptools, offline
    monkeypatch.setenv('PIP_DISABLE_PIP_VERSION_CHECK', '1')
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    nbclient.NotebookClient(nb, timeout=900, kernel_name='python3',
                            resources={'metadata': {'path': str(tmp_path)}}).execute()
    assert (tmp_path/'supercm_nb_repo'/'nbs').is_dir()
    pkg = subprocess.run([str(colab_python/'venv'/'bin'/'python'), '-c', 'import supercm_nb; print(supercm_nb.__file__)'],
                         check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert str(colab_python) in pkg, f'the package came from {pkg}, not from the install cell'
