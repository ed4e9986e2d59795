"""Render README.md from nbs/index.ipynb without Quarto (`--check` fails if they differ).

Markdown cells are copied; code cells become ```python blocks followed by their
text output. Cells flagged `#| hide`, and the Colab install cell, are left out, as
nbdev's README would. Images shown by index.ipynb must be files in the repo
(`![...](...)` in markdown), so the README can show them on GitHub.
"""
import argparse, re, sys
from pathlib import Path
from execnb.nbio import read_nb

ROOT = Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r'^#\|\s*(.*)$')
REL_LINK = re.compile(r'(\]\()(?!https?:|#|/|mailto:)([^)]+\))')


def _directives(src):
    "The `#|` directives at the top of a cell's source, as a list of words."
    out = []
    for line in src.splitlines():
        m = DIRECTIVE.match(line.strip())
        if not m: break
        out += m.group(1).split()
    return out


def _body(src):
    "A cell's source without its `#|` directive lines."
    return '\n'.join(l for l in src.splitlines() if not DIRECTIVE.match(l.strip())).strip()


def _text_output(cell):
    "The plain-text outputs of a code cell, joined."
    parts = []
    for o in cell.get('outputs', []):
        if o.get('output_type') == 'stream': parts.append(''.join(o.get('text', '')))
        elif 'text/plain' in o.get('data', {}) and 'image/png' not in o.get('data', {}):
            parts.append(''.join(o['data']['text/plain']))
    return ''.join(parts).rstrip()


def _relink(md):
    "Links relative to nbs/ (where index.ipynb lives) made relative to the repo root."
    return REL_LINK.sub(lambda m: m.group(1) + (m.group(2)[3:] if m.group(2).startswith('../') else 'nbs/' + m.group(2)), md)


def render(nb_path=ROOT/'nbs'/'index.ipynb'):
    "README text for the notebook at `nb_path`."
    nb, chunks = read_nb(nb_path), []
    for cell in nb.cells:
        direc = _directives(cell.source)
        if 'hide' in direc or 'colab' in direc: continue
        if cell.cell_type == 'markdown':
            chunks.append(_relink(cell.source.strip()))
        elif cell.cell_type == 'code' and _body(cell.source):
            chunks.append(f"```python\n{_body(cell.source)}\n```")
            out = _text_output(cell)
            if out and 'echo: false' not in ' '.join(direc): chunks.append(f"```\n{out}\n```")
    head = '<!-- Generated from nbs/index.ipynb by `python docs/make_readme.py`; edit the notebook, not this file. -->'
    return head + '\n\n' + '\n\n'.join(chunks) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--check', action='store_true', help='fail if README.md differs from the notebook')
    a = p.parse_args()
    text, readme = render(), ROOT/'README.md'
    if a.check:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python docs/make_readme.py` and commit.')
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8')
        print('wrote README.md')


if __name__ == '__main__': main()
