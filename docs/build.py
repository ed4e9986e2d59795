"""Build the documentation site from the notebooks into docs/_build/html, offline.

Usage: python docs/build.py [--force] [--strict] [--workers N]

1. nbdev's processing of nbs/ into _proc/ (what `nbdev_proc_nbs` does: `show_doc` cells added
   and rendered to markdown, hidden and export cells removed, directives applied), without
   the Quarto steps of that command (Quarto cannot be installed here).
2. The processed notebooks adapted for myst-nb into docs/_build/src: the page title and summary
   from nbdev's frontmatter, an "Open in Colab" badge, Quarto cell options (`echo: false`, ...)
   as myst-nb cell tags, nbdev's doc links made relative, the pages named as nbdev names them
   (`01_cm_loss.ipynb` -> `cm_loss.html`) and listed in reading order. Each `show_doc` entry is
   rewritten from the installed package (classes as classes, dataclass fields and parameters in
   tables with their docments, public methods as entries, public type names, docstrings escaped).
   An API reference page (api.md) from each module's `__all__`: the valid dataset, backbone and
   method names, then per module a one-line summary of every name, its constants, and the entries.
3. MathJax 3 from the npm registry (docs/package.json) copied into docs/_static/mathjax, once.
4. Sphinx + myst-nb + sphinx-book-theme, stored outputs kept (nothing is executed).
"""
import argparse, dataclasses, functools, importlib, inspect, json, os, re, shutil, subprocess, sys, time, types, typing
from pathlib import Path

import yaml
from nbdev.config import get_config
from fastcore.docments import docments
from nbdev.doclinks import nbglob, NbdevLookup

DOCS = Path(__file__).absolute().parent
BUILD = DOCS/'_build'
STAGE, OUT, DOCTREES = BUILD/'src', BUILD/'html', BUILD/'doctrees'
MATHJAX = DOCS/'_static'/'mathjax'
# the parts of MathJax's es5 folder the site loads: the combined TeX→SVG file and the components it loads lazily
MATHJAX_PARTS = ('tex-svg.js', 'input', 'output', 'a11y', 'ui', 'sre', 'adaptors')
BADGE = '_static/colab-badge.svg'
NUMBER = re.compile(r'^\d+[a-zA-Z0-9]*_')
LIB = get_config(path=DOCS).lib_name
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


# ---------------------------------------------------------------- API entries, rendered from the package itself
# nbdev's show_doc renders every class as `def Name(...)`, has no field table, no method entries, and shows the
# notebook's own names (`__main__.X`, `torch._C.Generator`). These entries are written from the installed package.
LIB_TYPE = re.compile(rf'\b(?:__main__|{LIB}(?:\.\w+)*)\.(?=[A-Za-z_])')
SHORT = {'torch.Tensor': 'Tensor', 'torch.nn.Module': 'nn.Module', 'numpy.ndarray': 'np.ndarray', 'pathlib.Path': 'Path'}
CLEAN_TYPE = ((re.compile(r"<class '([\w.]+)'>"), r'\1'), (LIB_TYPE, ''),
              (re.compile(r'\btorch\._C\.(_\w+\.)?'), 'torch.'), (re.compile(r'\btorch\.nn\.modules\.\w+\.'), 'nn.'),
              (re.compile(r'\bNoneType\b'), 'None'),
              (re.compile(r'\btyping\.'), ''), (re.compile(r'\s*\|\s*'), ' | '))
CODE_SPAN = re.compile(r'(`+)(.+?)\1', re.DOTALL)


def clean_type(s:str)->str:
    "A type's text with internal module paths made public (`torch._C.Generator` -> `torch.Generator`, `__main__.X` -> `X`)."
    for pat, rep in CLEAN_TYPE: s = pat.sub(rep, s)
    return s


def public_name(cls:type)->str:
    "The shortest public dotted name of a class (`torch._C.Generator` -> `torch.Generator`); package classes bare."
    mod, qn = cls.__module__, cls.__qualname__
    if mod == 'builtins' or mod.split('.')[0] in ('__main__', LIB): return qn
    parts = mod.split('.')
    for i in range(1, len(parts) + 1):
        name = '.'.join(parts[:i])
        if any(p.startswith('_') for p in parts[:i]): break
        if getattr(sys.modules.get(name), qn.split('.')[0], None) is cls or i == len(parts): break
    full = f'{name}.{qn}'
    return SHORT.get(full, full)


def type_name(t)->str:
    "A readable annotation: public class names, `A | B` unions, `list[X]` generics; '' for none."
    if t is inspect.Parameter.empty or t is inspect.Signature.empty: return ''
    if t is None or t is type(None): return 'None'
    if isinstance(t, str): return clean_type(t)
    if isinstance(t, (list, tuple)): return '[' + ', '.join(map(type_name, t)) + ']'
    if t is Ellipsis: return '...'
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType): return ' | '.join(map(type_name, args))
    if origin is typing.Literal: return f"Literal[{', '.join(map(repr, args))}]"
    if origin is not None and args: return f"{type_name(origin)}[{', '.join(map(type_name, args))}]"
    if isinstance(t, type): return public_name(t)
    return clean_type(repr(t))


def default_text(v)->str:
    "A parameter's default as short code text ('' for none; `list()` for a dataclass factory)."
    if v is inspect.Parameter.empty or v is dataclasses.MISSING: return ''
    if isinstance(v, type): return public_name(v)
    if callable(v) and not getattr(v, '__name__', '<').startswith('<'): return v.__name__
    s = clean_type(re.sub(r' at 0x[0-9a-f]+', '', repr(v)))
    return s if len(s) <= 60 else s[:57] + '...'


def escape_md(s:str)->str:
    "`<`, `>` escaped outside code spans, so a docstring's `<class>` shows as text, not as an HTML tag."
    out, i = [], 0
    for m in CODE_SPAN.finditer(s):
        out += [s[i:m.start()].replace('<', '&lt;').replace('>', '&gt;'), m.group(0)]
        i = m.end()
    return ''.join(out + [s[i:].replace('<', '&lt;').replace('>', '&gt;')])


def own_doc(obj)->str:
    "The object's own docstring (not a base class's, nor the `Name(field, ...)` text dataclasses generate), cleaned."
    f = obj.fget if isinstance(obj, property) else inspect.unwrap(getattr(obj, '__func__', obj))
    doc = vars(f).get('__doc__') if isinstance(f, type) else getattr(f, '__doc__', None)
    if not doc or (dataclasses.is_dataclass(f) and doc.startswith(f.__name__ + '(')): return ''
    return restore_escapes(inspect.cleandoc(doc))


LOST = {'\a': '\\a', '\b': '\\b', '\f': '\\f', '\v': '\\v'}
def restore_escapes(s:str)->str:
    "TeX that a non-raw docstring turned into control characters (`\\beta` read as backspace + 'eta') put back."
    return ''.join(LOST.get(c, c) for c in s)


def summary(obj)->str:
    "The first paragraph of the object's own docstring, on one line."
    return own_doc(obj).split('\n\n')[0].replace('\n', ' ').strip()


def _docments(obj)->dict:
    "fastcore's docments of `obj` (the `# comment` after each parameter or field), {} where its source cannot be read."
    try: return {k: v.get('docment') for k, v in docments(obj, full=True).items()}
    except Exception: return {}


def fields_of(cls:type)->list:
    "A dataclass's fields as rows (name, type, default, description)."
    docs = _docments(cls)
    def dflt(f):
        if f.default_factory is dataclasses.MISSING: return default_text(f.default)
        return f'{getattr(f.default_factory, "__name__", "factory")}()'
    return [(f.name, type_name(f.type), dflt(f), docs.get(f.name) or '') for f in dataclasses.fields(cls)]


def _callable_of(obj):
    "What inspect.signature should read: a class's own `__init__` (None if it has none in the package), or the function."
    if not isinstance(obj, type): return inspect.unwrap(getattr(obj, '__func__', obj))
    for k in obj.__mro__:
        if '__init__' in vars(k): return vars(k)['__init__'] if k.__module__.split('.')[0] == LIB else None
    return None


def params_of(obj)->list:
    "The parameters of a function, method or class constructor as (parameter, type, default, description); no self."
    f = _callable_of(obj)
    if f is None: return []
    try: sig = inspect.signature(f)
    except (TypeError, ValueError): return []
    docs, ps = _docments(f), list(sig.parameters.values())
    method = isinstance(obj, type) or '.' in getattr(f, '__qualname__', '')
    if ps and method and ps[0].name in ('self', 'cls'): ps = ps[1:]
    return [(p, type_name(p.annotation), default_text(p.default), docs.get(p.name) or '') for p in ps]


def _param_text(p, anno:str, dflt:str)->str:
    "One parameter as Python writes it: `*args`, `x: int = 1`, `x=1`."
    star = {inspect.Parameter.VAR_POSITIONAL: '*', inspect.Parameter.VAR_KEYWORD: '**'}.get(p.kind, '')
    if anno: return f"{star}{p.name}: {anno}" + (f' = {dflt}' if dflt else '')
    return star + p.name + (f'={dflt}' if dflt else '')


def signature_text(head:str, rows:list, ret:str='')->str:
    "`head(params) -> ret`, one parameter per line when it would not fit on one line; `/` and `*` markers kept."
    parts, kinds = [], [p.kind for p, *_ in rows]
    for i, (p, anno, dflt, _) in enumerate(rows):
        if p.kind == p.KEYWORD_ONLY and inspect.Parameter.VAR_POSITIONAL not in kinds and kinds.index(p.KEYWORD_ONLY) == i:
            parts.append('*')
        parts.append(_param_text(p, anno, dflt))
        if p.kind == p.POSITIONAL_ONLY and (i + 1 == len(rows) or rows[i + 1][0].kind != p.POSITIONAL_ONLY): parts.append('/')
    tail = f' -> {ret}' if ret else ''
    one = f"{head}({', '.join(parts)}){tail}"
    return one if len(one) <= 88 or not parts else head + '(\n' + ''.join(f'    {s},\n' for s in parts) + ')' + tail


def _cell(s:str)->str:
    "Text for a markdown table cell: on one line, its pipes escaped."
    return s.replace('|', '\\|').replace('\n', ' ')


def _code(s:str)->str:
    "`s` as inline code ('' stays '')."
    return f'`{s}`' if s else ''


def table(head:tuple, rows:list)->str:
    "A markdown table (pipes in cells escaped); descriptions linked and escaped, names, types and defaults as code."
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for name, anno, dflt, doc in rows:
        lines.append('| ' + ' | '.join(_cell(c) for c in (_code(name), _code(anno), _code(dflt), linked(doc))) + ' |')
    return '\n'.join(lines)


def linked(md:str)->str:
    "Markdown text escaped (`<`, `>`), with nbdev's doc links for backticked names and API-page links for constants."
    return link_constants(lookup().linkify(escape_md(md)) or '') if md else ''


CONSTANT = re.compile(r'(?<![\[\w])`(\w+)\.([A-Z][A-Z0-9_]*)`(?!\])')
def link_constants(md:str)->str:
    "Backticked `module.CONSTANT` names linked to the constant's row on the API page."
    cfg = get_config(path=DOCS)
    site = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/'
    def _link(m):
        mod = sys.modules.get(f'{LIB}.{m.group(1)}')
        if m.group(2) not in getattr(mod, '__all__', ()): return m.group(0)
        return f'[{m.group(0)}]({site}api.html#{m.group(1)}.{m.group(2)})'
    return CONSTANT.sub(_link, md)


@functools.lru_cache(maxsize=None)
def lookup()->NbdevLookup:
    "nbdev's doc-link index of the package (built once)."
    return NbdevLookup()


def source_url(obj)->str|None:
    "The GitHub URL of the line that defines `obj` in the package (None outside it)."
    f = inspect.unwrap(obj.fget if isinstance(obj, property) else getattr(obj, '__func__', obj))
    try: path, line = Path(inspect.getsourcefile(f)).resolve(), inspect.getsourcelines(f)[1]
    except (TypeError, OSError): return None
    cfg = get_config(path=DOCS)
    if not path.is_relative_to(cfg.lib_path.resolve()): return None
    rel = path.relative_to(cfg.config_path.resolve()).as_posix()
    return f"{cfg.git_url.rstrip('/')}/blob/{cfg.branch}/{rel}#L{line}"


def kind_of(obj)->str:
    "'dataclass', 'class', 'exception', 'property', 'function' or 'constant'."
    if isinstance(obj, type):
        if dataclasses.is_dataclass(obj): return 'dataclass'
        return 'exception' if issubclass(obj, BaseException) else 'class'
    if isinstance(obj, property): return 'property'
    return 'function' if callable(getattr(obj, '__func__', obj)) else 'constant'


def methods_of(cls:type)->list:
    "The public methods and properties a package class defines (patched ones included); an undocumented override of a "
    "base outside the package (`extra_repr`, `forward`) is left out."
    out = []
    for name, v in vars(cls).items():
        if name.startswith('_') and name != '__call__': continue
        if not (inspect.isfunction(v) or isinstance(v, (property, staticmethod, classmethod))): continue
        foreign = any(name in vars(b) for b in cls.__mro__[1:] if b.__module__.split('.')[0] != LIB)
        if foreign and not own_doc(v): continue
        out.append((name, v))
    return out


PARAM_HEAD, FIELD_HEAD = ('Parameter', 'Type', 'Default', 'Description'), ('Field', 'Type', 'Default', 'Description')


def signature_of(short:str, obj, kind:str)->tuple:
    "(signature text, table rows, table head) of a dataclass, class, property, function or method called `short`."
    if kind == 'dataclass':
        frozen = '(frozen=True)' if obj.__dataclass_params__.frozen else ''
        return f'@dataclass{frozen}\nclass {short}', fields_of(obj), FIELD_HEAD
    if kind in ('class', 'exception'):
        rows = params_of(obj)
        return (signature_text(f'class {short}', rows) if rows else f'class {short}'), rows, PARAM_HEAD
    if kind == 'property':
        ret = type_name(inspect.signature(obj.fget).return_annotation) if obj.fget else ''
        return f'@property\ndef {short}' + (f' -> {ret}' if ret else ''), [], PARAM_HEAD
    f, rows = _callable_of(obj), params_of(obj)
    try: ret = type_name(inspect.signature(f).return_annotation)
    except (TypeError, ValueError): ret = ''
    deco = {classmethod: '@classmethod\n', staticmethod: '@staticmethod\n'}.get(type(obj), '')
    return deco + signature_text(f"{'async ' if inspect.iscoroutinefunction(f) else ''}def {short}", rows, ret), rows, PARAM_HEAD


def entry_md(name:str, obj, level:int=3, skip=())->str:
    "A show_doc entry for `obj` (shown as `name`): source link, heading, signature, docstring, bases, parameter or "
    "field table, then a class's methods one level down (except those in `skip`, documented elsewhere on the page)."
    kind, url, short = kind_of(obj), source_url(obj), name.split('.')[-1]
    title = name.replace('_', '\\_')                  # escaped: markdown would read `__call__` as bold "call"
    md = '---\n\n' + (f'[source]({url}){{target="_blank"}}\n\n' if url else '') + f"{'#' * level} {title}\n\n"
    sig, rows, head = signature_of(short, obj, kind)
    md += f'```python\n{sig}\n```\n\n'
    if own_doc(obj): md += linked(own_doc(obj)) + '\n\n'
    bases = [b for b in obj.__bases__ if b is not object] if isinstance(obj, type) else []
    if bases: md += 'Bases: ' + ', '.join(f'`{type_name(b)}`' for b in bases) + '\n\n'
    if rows and (kind == 'dataclass' or any(r[3] for r in rows)):
        md += table(head, [(r[0] if isinstance(r[0], str) else r[0].name, *r[1:]) for r in rows]) + '\n\n'
    for m, v in methods_of(obj) if isinstance(obj, type) else ():
        if f'{short}.{m}' not in skip: md += entry_md(f'{short}.{m}', v, min(level + 1, 4)) + '\n\n'
    return md.rstrip() + '\n'


SHOW_DOC = re.compile(r'show_doc\(\s*([\w.]+)\s*\)')
FENCE = re.compile(r'^(```\w*\n)(.*?)(^```)', re.DOTALL | re.MULTILINE)
MD_LINK = re.compile(r'\[([^\]\n]+)\]\([^)\s]+\)')


@functools.lru_cache(maxsize=None)
def modidx()->dict:
    "The package's _modidx.py symbols: {module: {qualified name: (page#anchor, file)}} ({} without one)."
    idx = get_config(path=DOCS).lib_path/'_modidx.py'
    if not idx.exists(): return {}
    ns = {}
    exec(idx.read_text(encoding='utf-8'), ns)
    return ns['d'].get('syms', {})


def lib_modules()->tuple:
    "The package's modules, as its _modidx.py lists them."
    return tuple(modidx())


@functools.lru_cache(maxsize=None)
def lib_module(name:str):
    "The package module `name`, imported (None, with a note, where it fails to import)."
    try: return importlib.import_module(name)
    except Exception as e:
        print(f"note: {name} does not import ({type(e).__name__}: {e}); its show_doc entries are left as nbdev wrote them",
              file=sys.stderr)
        return None


def resolve(name:str, first:str|None=None):
    "The package object called `name` (`Class.method` too): from module `first`, else from a module exporting it; or None."
    head, *rest = name.split('.')
    for mod in [first] + [m for m in lib_modules() if m != first]:
        obj = lib_module(mod) if mod in lib_modules() else None
        if obj is None or head not in getattr(obj, '__all__', ()): continue
        obj = getattr(obj, head)
        for part in rest: obj = inspect.getattr_static(obj, part, None) if obj is not None else None
        if obj is not None: return obj
    return None


def clean_showdoc(md:str)->str:
    "nbdev's own show_doc markdown (for a name not in the package): public type names, no links in code, docstring escaped."
    md = FENCE.sub(lambda m: m.group(1) + MD_LINK.sub(r'\1', clean_type(m.group(2))) + m.group(3), md)
    return re.sub(r'^\*(.+)\*$', lambda m: '*' + escape_md(m.group(1)) + '*', md, flags=re.MULTILINE)


def default_exp(nb:dict)->str|None:
    "The module a notebook exports to (`#| default_exp name`), as a dotted package name."
    for c in nb['cells']:
        if c['cell_type'] == 'code' and (m := re.search(r'^#\|\s*default_exp\s+(\S+)', _src(c), re.MULTILINE)):
            return f'{LIB}.{m.group(1)}'
    return None

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
        self.titles, self.descriptions = {}, {}             # page -> its title, its one-line summary

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
        md = showdoc_html(md)
        def _anchor(m):
            id = m.group(2).replace('\\_', '_').lower()         # the name, its underscores unescaped
            self.anchors.setdefault(self.pages[self.cur], set()).add(id)
            return f'<span id="{id}"></span>\n\n{m.group(0)}'
        md = re.sub(r'^(#{2,4}) (\S+)\s*$', _anchor, md, flags=re.MULTILINE)
        return self.links(md, up)

    def entry(self, name:str, md:str, module:str|None, shown:set)->str:
        "A show_doc output written from the package (a class as a class, fields and methods); nbdev's, cleaned, if not found."
        obj = resolve(name, module)
        return clean_showdoc(md) if obj is None else entry_md(name, obj, 3, skip=shown)

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
        cells, fm, module = [], {}, default_exp(src_nb)
        shown = {m.group(1) for c in proc_nb['cells'] if c['cell_type'] == 'code'
                 and (m := SHOW_DOC.fullmatch(cell_options(_src(c))[1].strip()))}
        for c in proc_nb['cells']:
            s = _src(c)
            if c['cell_type'] == 'raw' and s.strip().startswith('---'):
                fm = yaml.safe_load(s.strip().strip('-')) or {}
                self.titles[page], self.descriptions[page] = fm.get('title') or page.stem, fm.get('description') or ''
                continue
            if c['cell_type'] == 'markdown':
                if s.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
                c['source'] = self.links(callouts(unnumbered(s)), up)
            elif c['cell_type'] == 'code':
                opts, code = cell_options(s)
                c['source'], doc = code, SHOW_DOC.fullmatch(code.strip())
                tags = tags_for(opts, code)
                if tags: c.setdefault('metadata', {})['tags'] = sorted(set(c['metadata'].get('tags', []) + tags))
                for o in c.get('outputs', []):
                    if opts.get('output') == 'asis' and o.get('output_type') == 'stream':
                        o.clear(); o.update(output_type='display_data', metadata={}, data={'text/markdown': _src({'source': o.get('text', '')})})
                    if 'text/markdown' in o.get('data', {}):
                        md = _src({'source': o['data']['text/markdown']})
                        if doc: md = self.entry(doc.group(1), md, module, shown)
                        o['data']['text/markdown'] = self.showdoc_md(unnumbered(md), up)
            cells.append(c)
        if fm.get('title'):
            intro = self.links(callouts(unnumbered(lookup().linkify(self.intro(src_nb)) or '')), up)
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


def showdoc_html(md:str)->str:
    "show_doc's Quarto-styled source link and `---` rule as HTML."
    md = re.sub(r'\[source\]\(([^)]+)\)\{[^}]*\}',
                r'<a class="nbdev-source" href="\1" target="_blank" rel="noopener">source</a>', md)
    return re.sub(r'^---\s*$', '<hr class="nbdev-sep">', md, flags=re.MULTILINE)


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


API_INTRO = ("Every public name of the package (each module's `__all__`), by module in reading order: a table of the "
             "names with their one-line summaries, the values of the module's constants, then each name's entry "
             "(signature, docstring, parameters or fields with their descriptions, methods), linked to its source and "
             "to the page that builds it up.")
# the options whose valid values the page lists first: (option, module, constant)
VALID_NAMES = (('dataset', 'data', 'DATASETS'), ('arch', 'models', 'ARCHS'), ('method', 'methods', 'METHODS'))


def values_text(v, most:int=40)->str:
    "A constant's values as code: a dict's keys, a sequence's items (the first `most`), else its repr."
    if not isinstance(v, (dict, tuple, list, set, frozenset)): return _code(default_text(v))
    items = list(v)
    return ', '.join(f'`{x!r}`' for x in items[:most]) + (f', ... ({len(items)} in all)' if len(items) > most else '')


def valid_names()->str:
    "A table of the valid values of the dataset, backbone and method names."
    rows = [(opt, f'{mod}.{const}', getattr(lib_module(f'{LIB}.{mod}'), const, None)) for opt, mod, const in VALID_NAMES]
    rows = [r for r in rows if r[2] is not None]
    if not rows: return ''
    return '\n'.join(['## Valid names', '', 'The names a run configuration (`dataset`, `arch`, `method`) accepts.', '',
                      '| Option | Constant | Valid values |', '|---|---|---|']
                     + [f'| `{o}` | `{c}` | {_cell(values_text(v))} |' for o, c, v in rows])


def module_page(mod:str)->str|None:
    "The page (`gmm`) that documents module `mod`, from the links in _modidx.py."
    urls = [u for u, _ in modidx().get(mod, {}).values()]
    return urls[0].split('.html')[0] if urls else None


class APIPage:
    "The API reference page (api.md): valid names, then per module its names' summaries, constants and entries."
    def __init__(self, adapt, order:list):
        self.adapt, self.order, self.ids = adapt, order, {}   # ids: lower case -> the entry's id (`train.TrainConfig`)

    def home(self, page:str|None, name:str)->str:
        "A link to `name`'s entry on the page that explains it ('' if that page has no such entry)."
        key = Path(f'{page}.ipynb')
        if not page or name.lower() not in self.adapt.anchors.get(key, ()): return ''
        title = self.adapt.titles.get(key, page)
        return f'<a class="nbdev-source api-home" href="{page}.html#{name.lower()}">in {title}</a>\n\n'

    def entry(self, short:str, page:str|None, name:str, obj)->str:
        "`name`'s entry with ids `module.name` (and `module.class.method`), headings as rubrics, out of the page's toc."
        def _h(m):
            nm = m.group(2).replace('\\_', '_')                 # the name, its underscores unescaped
            self.ids.setdefault(f'{short}.{nm}'.lower(), f'{short}.{nm}')
            return (self.home(page, nm) + f'<span id="{short}.{nm}"></span>\n\n'
                    f'```{{rubric}} {m.group(2)}\n:heading-level: {len(m.group(1))}\n:class: api-name\n```')
        md = re.sub(r'^(#{3,4}) (\S+)\s*$', _h, entry_md(name, obj, 3), flags=re.MULTILINE)
        return showdoc_html(md)

    def module(self, name:str, mod)->str:
        "A module's section: its summary, where it is explained, its names table, constants table and entries."
        short, page = name.removeprefix(LIB + '.'), module_page(name)
        objs = [(n, getattr(mod, n)) for n in mod.__all__ if hasattr(mod, n)]
        consts = [(n, o) for n, o in objs if kind_of(o) == 'constant']
        docs = [(n, o) for n, o in objs if kind_of(o) != 'constant']
        about = self.adapt.descriptions.get(Path(f'{page}.ipynb')) or linked(summary(mod))
        out = [f'## {short}', f'`{name}`' + (f': {about}' if about else '')]
        if page and Path(f'{page}.ipynb') in self.adapt.titles:
            out.append(f'Explained in <a href="{page}.html">{self.adapt.titles[Path(page + ".ipynb")]}</a>.')
        if docs:
            out.append('\n'.join(['| Name | Kind | Summary |', '|---|---|---|'] +
                                 [f'| <a href="#{short}.{n}"><code>{n}</code></a> | {kind_of(o)} | '
                                  f'{_cell(linked(summary(o)))} |' for n, o in docs]))
        if consts:
            out.append('\n'.join(['| Constant | Values |', '|---|---|'] +
                                 [f'| <code id="{short}.{n}">{n}</code> | {_cell(values_text(o))} |' for n, o in consts]))
        return '\n\n'.join([o for o in out if o] + [self.entry(short, page, n, o) for n, o in docs])

    def __str__(self):
        mods = [(m, mod) for m in lib_modules() if (mod := lib_module(m)) is not None and getattr(mod, '__all__', None)]
        rank = lambda m: self.order.index(p) if (p := module_page(m[0])) in self.order else len(self.order)
        parts = ['# API reference', API_INTRO, valid_names()] + [self.module(n, mod) for n, mod in sorted(mods, key=rank)]
        return self.adapt.links(self.local('\n\n'.join(p for p in parts if p)), '') + '\n'

    def local(self, md:str)->str:
        "nbdev's doc links to a name's entry on its notebook page pointed at its entry on this page instead."
        cfg = get_config(path=DOCS)
        site = re.escape(cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/')
        short = {module_page(m): m.removeprefix(LIB + '.') for m in lib_modules()}
        def _local(m):
            id = self.ids.get(f'{short.get(m.group(2))}.{m.group(3)}'.lower())
            return f'<a href="#{id}">{m.group(1)}</a>' if id else m.group(0)
        return re.sub(rf'(?<!!)\[([^\]\n]+)\]\({site}([\w/-]+)\.html#([\w.]+)\)', _local, md)


def api_page(adapt, order:list)->str|None:
    "The API reference page's markdown, or None when the package has no _modidx.py."
    return str(APIPage(adapt, order)) if lib_modules() else None


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
    api = api_page(adapt, entries)
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
