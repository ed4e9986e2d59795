"""Execute notebooks in place so their stored outputs (figures, tables) are fresh.

Usage: python docs/run_nbs.py [NOTEBOOK ...] [--flags "slow cuda"] [--cells ID,ID]

Cells flagged with a test flag from settings.ini (`#| slow`, `#| cuda`) are skipped
unless named in --flags, or unless their cell id is in --cells (to refresh, say, the
slow cell that only reads result files without retraining anything else); a skipped
cell keeps the outputs it already had, so the results of a slow run are not lost when
the fast cells are refreshed.
"""
import argparse, os, sys, time
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.process import NBProcessor
from nbdev.frontmatter import FrontmatterProc


def _skip(flags, ids=frozenset()):
    "A preproc for `CaptureShell.run_all` that skips markdown, export-only and flagged cells (except the cells `ids`)."
    def _inner(cell):
        if cell.cell_type != 'code': return True
        direc = getattr(cell, 'directives_', {}) or {}
        if direc.get('eval:', [''])[0].lower() == 'false': return True
        return bool(flags & direc.keys()) and cell.get('id') not in ids
    return _inner


def run_nb(fn: Path, flags: set, ids=frozenset()):
    "Run `fn` in its own folder and write its outputs back; raise on the first error."
    proc = NBProcessor(fn, procs=FrontmatterProc, process=True)
    nb = proc.nb
    shell = CaptureShell(fn)
    start = time.time()
    with working_directory(fn.parent):
        shell.run_all(nb, exc_stop=True, preproc=_skip(flags, ids))
    raw = read_nb(fn)
    for cell, done in zip(raw.cells, nb.cells):
        if cell.cell_type == 'code' and not _skip(flags, ids)(done):
            cell.outputs, cell.execution_count = done.outputs, done.get('execution_count')
    write_nb(raw, fn)
    return time.time() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('nbs', nargs='*', help='notebooks to run (default: all in nbs_path)')
    p.add_argument('--flags', default='', help='test flags whose cells should run, e.g. "slow"')
    p.add_argument('--cells', default='', help='comma-separated ids of flagged cells to run anyway')
    a = p.parse_args()
    cfg = get_config()
    skip = set(cfg.get('tst_flags', '').split()) - set(a.flags.split())
    fns = [Path(o).resolve() for o in a.nbs] or sorted(Path(cfg.nbs_path).glob('*.ipynb'))
    os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    import torch; torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    for fn in fns:
        secs = run_nb(fn, skip, frozenset(filter(None, a.cells.split(','))))
        print(f'{fn.name}: ran in {secs:.1f}s')


if __name__ == '__main__': main()
