"""Build the documentation site from the notebooks into docs/_build/html, offline.

Usage: python docs/build.py [--force] [--strict] [--workers N]

1. nbdev's processing of nbs/ into _proc/ (what `nbdev_proc_nbs` does: `show_doc` cells added
   and rendered to markdown, hidden and export cells removed, directives applied), without
   the Quarto steps of that command (Quarto cannot be installed here).
2. The processed notebooks adapted for myst-nb into docs/_build/src: the page title and summary
   from nbdev's frontmatter, an "Open in Colab" badge, Quarto cell options (`echo: false`, ...)
   as myst-nb cell tags, nbdev's doc links made relative, the pages named as nbdev names them
   (`01_cm_loss.ipynb` -> `cm_loss.html`) and listed in reading order.
3. MathJax 3 from the npm registry (docs/package.json) copied into docs/_static/mathjax, once.
4. Sphinx + myst-nb + sphinx-book-theme, stored outputs kept (nothing is executed).
"""
import argparse, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

import yaml
from nbdev.config import get_config
from nbdev.doclinks import nbglob, NbdevLookup

DOCS = Path(__file__).absolute().parent
BUILD = DOCS/'_build'
STAGE, OUT, DOCTREES = BUILD/'src', BUILD/'html', BUILD/'doctrees'
MATHJAX = DOCS/'_static'/'mathjax'
# the parts of MathJax's es5 folder the site loads: the combined TeX→SVG file and the components it loads lazily
MATHJAX_PARTS = ('tex-svg.js', 'input', 'output', 'a11y', 'ui', 'sre', 'adaptors')
BADGE = '_static/colab-badge.svg'
NUMBER = re.compile(r'^\d+[a-zA-Z0-9]*_')
# files in nbs/ besides notebooks that pages may show or link to (checkpoints and the like stay out of the site)
ASSETS = {'.png', '.jpg', '.jpeg', '.gif', '.svg', '.webp', '.pdf', '.csv', '.json', '.txt'}


# ---------------------------------------------------------------- MathJax
def ensure_mathjax():
    "Copy MathJax into docs/_static/mathjax, installing the npm package (docs/package.json) into docs/node_modules if missing."
    want = json.loads((DOCS/'package.json').read_text(encoding='utf-8'))['dependencies']['mathjax']
    stamp = MATHJAX/'VERSION'
    if stamp.exists() and stamp.read_text().strip() == want: return
    shutil.rmtree(MATHJAX, ignore_errors=True)
    src, pkg = DOCS/'node_modules'/'mathjax'/'es5', DOCS/'node_modules'/'mathjax'/'package.json'
    if not pkg.exists() or json.loads(pkg.read_text(encoding='utf-8'))['version'] != want:
        npm = shutil.which('npm')
        if not npm: sys.exit('MathJax is missing and npm is not installed: install Node.js/npm '
                             '(apt-get install npm), then run `make docs` again.')
        print('installing MathJax from the npm registry (once) ...', flush=True)
        subprocess.run([npm, 'ci', '--prefix', str(DOCS), '--no-audit', '--no-fund', '--loglevel=error'], check=True)
    tmp = BUILD/'mathjax.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for part in MATHJAX_PARTS:
        (shutil.copytree if (src/part).is_dir() else shutil.copy2)(src/part, tmp/part)
    (tmp/'VERSION').write_text(want + '\n')
    tmp.rename(MATHJAX)


# ---------------------------------------------------------------- nbdev processing
def _proc_one(job):
    "nbdev's processing of one notebook (run in a worker process); the error text names the cell and its cause."
    import warnings, nbdev.serve_drv
    try:
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter('always')
            nbdev.serve_drv.main(job)
    except Exception as e:
        cause = e.__cause__ or e.__context__
        raise RuntimeError(f'{e}' + (f'\n-> {type(cause).__name__}: {cause}' if cause else '')) from None
    for w in ws:   # nbdev's "imports and other code" warning, one line per cell; the Colab install cell is expected
        msg = str(w.message)
        if 'Found cells containing imports' not in msg: print(f'{job[0].name}: {msg}', file=sys.stderr); continue
        src = [l for l in msg.split('---')[1].strip().splitlines() if not l.startswith('#|')]
        if src and 'google.colab' not in msg:
            print(f'note: {job[0].name}: nbdev ran this cell to render docs (it mixes imports and code): {src[0][:80]}',
                  file=sys.stderr)


def nbdev_process(cfg, nbs:Path, force:bool, workers:int):
    """nbdev's processing of nbs/ into _proc/ (what `nbdev_proc_nbs` runs, with the same processors and cache),
    all notebooks tried and every failure reported; returns ({source notebook: processed notebook}, _proc)."""
    import nbdev.serve
    from nbdev.serve import _proc_file
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    cache = cfg.config_path/'_proc'
    # as nbdev: a newer settings.ini or nbdev invalidates the whole cache
    chk = max(cfg.config_file.stat().st_mtime, Path(nbdev.serve.__file__).stat().st_mtime)
    if cache.exists() and (force or cache.stat().st_mtime < chk): shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    files = nbglob(nbs, func=Path, file_glob='', file_re='')
    jobs = [j for f in files if (j := _proc_file(f, cache=cache, path=nbs))]   # copies other files, skips fresh ones
    failed = {}
    if jobs:
        print(f"nbdev processing {len(jobs)} notebook(s): {', '.join(j[0].name for j in jobs)}", flush=True)
        # a fresh process per notebook, as nbdev's own run isolates them (and IPython replaces a worker's __main__)
        with ProcessPoolExecutor(max(1, workers), mp_context=get_context('spawn'), max_tasks_per_child=1) as ex:
            futs = {ex.submit(_proc_one, j): j for j in jobs}
            for fut, (src, dst, _) in futs.items():
                if fut.exception(): failed[src] = fut.exception(); Path(dst).unlink(missing_ok=True)
    for src, e in failed.items(): print(f'\n=== {src.relative_to(cfg.config_path)}: {e}', file=sys.stderr)
    cache.touch()
    done = {f: cache/f.relative_to(nbs) for f in sorted(nbglob(nbs, as_path=True)) if f not in failed}
    return done, cache, [f.relative_to(cfg.config_path) for f in failed]

FAILED_HELP = ('nbdev runs, in a fresh shell, the exported cells, the show_doc cells and every cell that has an import '
               '(to render show_doc). A cell that mixes an import with code that needs earlier cells fails there: '
               'put the import in a cell of its own (nbdev FAQ), or mark the cell `#| eval: false` if it must not run.')


# ---------------------------------------------------------------- adapting the notebooks for myst-nb
def page_name(rel:Path)->Path:
    "nbdev's page name for a notebook: lower case, number prefix removed (`01_cm_loss.ipynb` -> `cm_loss.ipynb`)."
    return rel.with_name(NUMBER.sub('', rel.name.lower()))

def _src(cell): return ''.join(cell['source']) if isinstance(cell.get('source'), list) else cell.get('source') or ''

OPTION = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')
def cell_options(source:str):
    "Split the leading Quarto `#| key: value` lines off a code cell: (options, code)."
    lines, opts = source.splitlines(), {}
    while lines and (m := OPTION.match(lines[0])):
        opts[m.group(1)] = m.group(2).strip('\'"').lower()
        lines.pop(0)
    return opts, '\n'.join(lines).strip('\n')

def tags_for(opts:dict, code:str)->list:
    "The myst-nb cell tags that do what Quarto's cell options do."
    tags = []
    if opts.get('include') == 'false': tags.append('remove-cell')
    if opts.get('echo') == 'false' or not code.strip(): tags.append('remove-input')
    if opts.get('output') == 'false': tags.append('remove-output')
    if opts.get('code-fold') in ('true', 'hide'): tags.append('hide-input')
    return tags


class Adapter:
    "Turns nbdev's processed notebooks (written for Quarto) into notebooks that myst-nb renders the same way."
    def __init__(self, cfg, nbs:Path, pages:dict):
        self.cfg, self.nbs, self.pages = cfg, nbs, pages   # pages: original rel path -> page rel path
        self.site = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/'
        user, repo = cfg.git_url.rstrip('/').split('/')[-2:]
        self.colab = f'https://colab.research.google.com/github/{user}/{repo}/blob/{cfg.branch}/'
        self.nbs_rel = nbs.relative_to(cfg.config_path).as_posix()
        self.files = {}                                     # files outside nbs/ that pages show: repo path -> staged path
        self.anchors = {}                                   # page -> ids of its show_doc entries

    def links(self, md:str, up:str)->str:
        "nbdev's absolute doc links made relative; links to source notebooks pointed at their pages; repo files staged."
        md = md.replace(self.site, up)
        def _nb(m):
            target, frag = m.group(2), m.group(3) or ''
            rel = Path(target)
            if rel.suffix == '.ipynb':
                for orig, page in self.pages.items():
                    if orig.name == rel.name: return f'{m.group(1)}{up}{page.with_suffix(".html").as_posix()}{frag}'
            if target.startswith('../'):                  # a repo file shown by a notebook, as README images are
                f = Path(os.path.normpath(self.nbs/self.cur.parent/target))
                try: rp = f.relative_to(self.cfg.config_path)
                except ValueError: return m.group(0)
                if f.is_file():
                    self.files[rp] = Path('_repo')/rp
                    return f'{m.group(1)}{up}_repo/{rp.as_posix()}{frag}'
            return m.group(0)
        md = re.sub(r'''(\]\(|src=["']|href=["'])([^)"'#\s]+)(#[^)"'\s]*)?''', _nb, md)
        # links between pages as inline HTML: Sphinx would try (and fail) to resolve `page.html#name` itself
        return re.sub(r'(?<!!)\[([^\]\n]+)\]\(((?:\.\./)*[\w./-]*\.html(?:#[^)\s]*)?)\)', r'<a href="\2">\1</a>', md)

    def showdoc_md(self, md:str, up:str)->str:
        "A show_doc output: Quarto's styled source link as HTML, and the anchor nbdev's doc links point at."
        md = re.sub(r'\[source\]\(([^)]+)\)\{[^}]*\}',
                    r'<a class="nbdev-source" href="\1" target="_blank" rel="noopener">source</a>', md)
        md = re.sub(r'^---\s*$', '<hr class="nbdev-sep">', md, flags=re.MULTILINE)
        def _anchor(m):
            self.anchors.setdefault(self.pages[self.cur], set()).add(m.group(2).lower())
            return f'<span id="{m.group(2).lower()}"></span>\n\n{m.group(0)}'
        md = re.sub(r'^(#{2,4}) (\S+)\s*$', _anchor, md, flags=re.MULTILINE)
        return self.links(md, up)

    def title_cell(self, fm:dict, intro:str, badge_url:str, up:str)->dict:
        "The page title, summary, the notebook's introduction (nbdev drops it with the title cell) and the Colab badge."
        parts = [f"# {fm['title']}"]
        badge = (f'<a class="colab-badge" href="{badge_url}" target="_blank" rel="noopener">'
                 f'<img src="{up}{BADGE}" alt="Open In Colab" width="121" height="20"></a>')
        parts.append(badge)
        if fm.get('description'): parts.append('{.nb-description}\n' + fm['description'])
        if intro: parts.append(intro)
        return md_cell('\n\n'.join(parts), 'page-title')

    def intro(self, src_nb:dict)->str:
        "Text of the source notebook's title cell besides the `# title`, `> summary` and `- key: value` lines."
        for c in src_nb['cells']:
            if c['cell_type'] != 'markdown': continue
            s = _src(c)
            if not re.search(r'^#\s+\S', s, flags=re.MULTILINE): continue
            keep = [l for l in s.splitlines() if not re.match(r'^(#\s+\S|>\s+\S|-\s+\S.*:)', l)]
            return '\n'.join(keep).strip()
        return ''

    def __call__(self, orig:Path, proc_nb:dict, src_nb:dict)->dict:
        self.cur = orig
        page = self.pages[orig]
        up = '../' * (len(page.parts) - 1)
        badge_url = self.colab + f'{self.nbs_rel}/{orig.as_posix()}'
        cells, fm = [], {}
        for c in proc_nb['cells']:
            s = _src(c)
            if c['cell_type'] == 'raw' and s.strip().startswith('---'):
                fm = yaml.safe_load(s.strip().strip('-')) or {}
                continue
            if c['cell_type'] == 'markdown':
                if s.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
                c['source'] = self.links(callouts(unnumbered(s)), up)
            elif c['cell_type'] == 'code':
                opts, code = cell_options(s)
                c['source'] = code
                tags = tags_for(opts, code)
                if tags: c.setdefault('metadata', {})['tags'] = sorted(set(c['metadata'].get('tags', []) + tags))
                for o in c.get('outputs', []):
                    if opts.get('output') == 'asis' and o.get('output_type') == 'stream':
                        o.clear(); o.update(output_type='display_data', metadata={}, data={'text/markdown': _src({'source': o.get('text', '')})})
                    if 'text/markdown' in o.get('data', {}):
                        o['data']['text/markdown'] = self.showdoc_md(unnumbered(_src({'source': o['data']['text/markdown']})), up)
            cells.append(c)
        if fm.get('title'):
            intro = self.links(callouts(unnumbered(NbdevLookup().linkify(self.intro(src_nb)))), up)
            cells.insert(0, self.title_cell(fm, intro, badge_url, up))
        else:
            print(f'warning: {orig} has no `# Title` markdown cell; its page gets no title', file=sys.stderr)
            cells.insert(0, md_cell(f'<a class="colab-badge" href="{badge_url}"><img src="{up}{BADGE}" alt="Open In Colab"></a>', 'page-title'))
        proc_nb['cells'] = cells
        meta = proc_nb.setdefault('metadata', {})
        meta.pop('widgets', None)
        meta.setdefault('kernelspec', {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'})
        meta.setdefault('language_info', {'name': 'python', 'pygments_lexer': 'ipython3'})
        return proc_nb


def md_cell(source:str, id:str)->dict: return {'cell_type': 'markdown', 'id': id, 'metadata': {}, 'source': source}


AMS = re.compile(r'\\(begin|end)\{(equation|align|alignat|gather|multline|flalign|eqnarray)\}')
def unnumbered(md:str)->str:
    "Numbered amsmath environments as their starred forms: Jupyter and Quarto show no equation numbers, Sphinx would."
    return AMS.sub(lambda m: '\\' + m.group(1) + '{' + m.group(2) + '*}', md)


CALLOUT = re.compile(r'^:::\s*\{\.callout-(note|tip|warning|important|caution)[^}]*\}\s*$', re.MULTILINE)
def callouts(md:str)->str:
    "Quarto callout blocks (`::: {.callout-note}`) as MyST admonitions (`:::{note}`)."
    return CALLOUT.sub(lambda m: ':::{' + m.group(1) + '}', md)


def toctree(entries, hidden=True)->str:
    opts = ':hidden:\n' if hidden else ''
    return '```{toctree}\n' + opts + ':maxdepth: 1\n\n' + '\n'.join(entries) + '\n```'


def api_page(cfg, anchors:dict, order:list)->str|None:
    "A page listing every documented symbol with a link to its show_doc entry (symbols from the library's _modidx.py)."
    idx = cfg.lib_path/'_modidx.py'
    if not idx.exists(): return None
    ns = {}
    exec(idx.read_text(encoding='utf-8'), ns)
    site = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/'
    have = {p.with_suffix('.html').as_posix() + '#' + a for p, ids in anchors.items() for a in ids}
    lines = ['# API index', '', 'Every documented name of the library, linked to its entry in the notebook that defines it.', '']
    mods = []
    for mod, syms in ns['d'].get('syms', {}).items():
        rows = [(k, v[0].replace(site, '')) for k, v in sorted(syms.items()) if v[0].replace(site, '') in have]
        if rows: mods.append((min(order.index(u.split('#')[0].removesuffix('.html')) for _, u in rows), mod, rows))
    for _, mod, rows in sorted(mods):                    # modules in reading order
        lines += [f'## {mod}', '']
        lines += [f'- <a href="{url}"><code>{k[len(mod)+1:]}</code></a>' for k, url in rows] + ['']
    return '\n'.join(lines)


def write_if_changed(path:Path, text:str):
    "Write `text` to `path` unless it holds it already (Sphinx then rebuilds only changed pages)."
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding='utf-8') != text: path.write_text(text, encoding='utf-8')


def stage(cfg, nbs:Path, processed:dict, cache:Path):
    "Write the Sphinx source folder docs/_build/src from the processed notebooks; return its page names in reading order."
    order = lambda r: (r.parts[:-1], r.name != 'index.ipynb', r.as_posix())
    rels = sorted((src.relative_to(nbs) for src in processed), key=order)
    # every notebook's page name (links to a notebook whose processing failed still point at its page)
    pages = {r: page_name(r) for r in sorted((f.relative_to(nbs) for f in nbglob(nbs, as_path=True)), key=order)}
    clash = {p for p in pages.values() if list(pages.values()).count(p) > 1}
    if clash: sys.exit(f'two notebooks give the same page name {clash}: rename one of them.')
    adapt, keep = Adapter(cfg, nbs, pages), set()
    for r in rels:
        proc_nb = json.loads((cache/r).read_text(encoding='utf-8'))
        src_nb = json.loads((nbs/r).read_text(encoding='utf-8'))
        nb = adapt(r, proc_nb, src_nb)
        keep.add(pages[r])
        write_if_changed(STAGE/pages[r], json.dumps(nb, indent=1, ensure_ascii=False))
    # other files nbdev copied from nbs/ (images the notebooks show), and repo files they point at
    for f in cache.rglob('*'):
        r = f.relative_to(cache)
        if f.is_file() and f.suffix.lower() in ASSETS and (nbs/r).exists():
            keep.add(r); _copy_if_changed(f, STAGE/r)
    for rp, dst in adapt.files.items():
        keep.add(dst); _copy_if_changed(cfg.config_path/rp, STAGE/dst)
    entries = [pages[r].with_suffix('').as_posix() for r in rels if pages[r] != Path('index.ipynb')]
    api = api_page(cfg, adapt.anchors, entries)
    if api:
        keep.add(Path('api.md')); entries.append('api')
        write_if_changed(STAGE/'api.md', api)
    if Path('index.ipynb') in keep:                       # the front page lists the pages in its hidden toctree
        nb = json.loads((STAGE/'index.ipynb').read_text(encoding='utf-8'))
        nb['cells'].append(md_cell(toctree(entries), 'site-toctree'))
        write_if_changed(STAGE/'index.ipynb', json.dumps(nb, indent=1, ensure_ascii=False))
    else:
        keep.add(Path('index.md'))
        write_if_changed(STAGE/'index.md', f'# {cfg.title}\n\n{cfg.description}\n\n' + toctree(entries, hidden=False))
    for f in sorted(STAGE.rglob('*'), reverse=True):      # pages of notebooks that are gone
        if f.is_file() and f.relative_to(STAGE) not in keep: f.unlink()
    return entries


def _copy_if_changed(src:Path, dst:Path):
    if dst.exists() and dst.read_bytes() == src.read_bytes(): return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


# ---------------------------------------------------------------- Sphinx
def sphinx(strict:bool):
    "Run sphinx-build on docs/_build/src with docs/conf.py; warnings also go to docs/_build/warnings.txt."
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-c', str(DOCS), '-d', str(DOCTREES), '-q',
           '-w', str(BUILD/'warnings.txt'), str(STAGE), str(OUT)]
    if strict: cmd[4:4] = ['-W', '--keep-going']
    return subprocess.run(cmd).returncode


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--force', action='store_true', help="reprocess every notebook (ignore nbdev's _proc cache)")
    p.add_argument('--strict', action='store_true', help='fail on any Sphinx warning')
    p.add_argument('--workers', type=int, default=1, help="processes for nbdev's processing (default 1)")
    a = p.parse_args()
    t0 = time.time()
    cfg = get_config()
    nbs = Path(cfg.nbs_path)
    if not any(nbglob(nbs, as_path=True)): sys.exit(f'no notebooks in {nbs}')
    ensure_mathjax()
    processed, cache, failed = nbdev_process(cfg, nbs, a.force, a.workers)
    t1 = time.time()
    entries = stage(cfg, nbs, processed, cache)
    rc = sphinx(a.strict)
    warn = (BUILD/'warnings.txt').read_text(encoding='utf-8').strip() if (BUILD/'warnings.txt').exists() else ''
    if rc: sys.exit(f'sphinx-build failed (exit {rc})')
    if failed:
        sys.exit(f"\nThe site was built WITHOUT {', '.join(map(str, failed))}: nbdev's processing failed for them "
                 f'(errors above).\n{FAILED_HELP}')
    n_warn = len([l for l in warn.splitlines() if 'WARNING' in l])
    print(f'site built in {time.time()-t0:.0f}s (nbdev processing {t1-t0:.0f}s): {len(entries)+1} pages, '
          f'{n_warn} warnings -> {OUT.relative_to(cfg.config_path)}/index.html')


if __name__ == '__main__': main()
