"""The documentation site in a real browser: headless Chromium on docs/_build/html served on localhost.

Every page: loads with no console error and no request leaving localhost, no broken image, no broken
internal link or anchor, math rendered by MathJax (no raw `$$`, `\\(` or `\\[` left in the text, no
MathJax error), no hidden cell or `#|` directive shown, no code block or display equation cut off (its
content fits its box, or the box scrolls); screenshots of each page's full height go to
test-artifacts/screenshots/ (JPEG, in parts of at most 8000 px). Also: one page per notebook with its Colab
badge, the sidebar in reading order, search finding a page, `TrainConfig` on the API page as a class
with its fields described, and a Sphinx build without warnings.
Needs Debian's `chromium` and `chromium-driver` (skips without them); builds the site if it is missing.
"""
import base64, functools, html.parser, json, re, shutil, subprocess, sys, threading, urllib.error, urllib.request
from configparser import ConfigParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest

ROOT = Path(__file__).absolute().parents[1]
SITE = ROOT/'docs'/'_build'/'html'
SHOTS = ROOT/'test-artifacts'/'screenshots'
NUMBER = re.compile(r'^\d+[a-zA-Z0-9]*_')
CHROME_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update', '--disable-sync',
                '--disable-dev-shm-usage', '--window-size=1280,900']
INSTALL = 'install it with `apt-get install chromium chromium-driver` (Debian), as .ci/run does'


def _cfg():
    ini = ConfigParser(delimiters=['='])
    ini.read(ROOT/'settings.ini', encoding='utf-8')
    return ini['DEFAULT']


def _notebooks():
    "The source notebooks and their page names, as docs/build.py names them (`01_cm_loss.ipynb` -> `cm_loss.html`)."
    nbs = ROOT/_cfg()['nbs_path']
    fns = [f for f in nbs.rglob('*.ipynb') if not any(p.startswith(('_', '.')) for p in f.relative_to(nbs).parts)]
    rels = sorted((f.relative_to(nbs) for f in fns), key=lambda r: (r.parts[:-1], r.name != 'index.ipynb', r.as_posix()))
    return [(r, r.with_name(NUMBER.sub('', r.name.lower())).with_suffix('.html').as_posix()) for r in rels]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def site():
    "The built site; built with docs/build.py if missing."
    if not (SITE/'index.html').exists():
        r = subprocess.run([sys.executable, 'docs/build.py'], cwd=ROOT)
        if r.returncode or not (SITE/'index.html').exists():
            pytest.fail('docs/_build/html is missing and docs/build.py failed: run `make docs` and fix what it reports.')
    return SITE


@pytest.fixture(scope='module')
def server(site):
    "The site served over http on a free localhost port; yields its base URL."
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/'
    srv.shutdown(); srv.server_close()


@pytest.fixture(scope='module')
def driver(tmp_path_factory):
    "Headless Debian Chromium driven by selenium (skips where Chromium or chromedriver is not installed)."
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    chromedriver = shutil.which('chromedriver')
    if not chromium or not chromedriver:
        pytest.skip(f"browser check of the docs site skipped: {'chromium' if not chromium else 'chromedriver'} "
                    f"not found; {INSTALL}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip('browser check of the docs site skipped: selenium missing; `pip install -e ".[dev]"`')
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in CHROME_FLAGS + [f'--user-data-dir={tmp_path_factory.mktemp("chromium-profile")}']: opts.add_argument(f)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    d = webdriver.Chrome(options=opts, service=Service(executable_path=chromedriver))
    d.set_page_load_timeout(30)
    d.set_script_timeout(30)
    yield d
    d.quit()


# ---------------------------------------------------------------- helpers
class _Ids(html.parser.HTMLParser):
    "The element ids (and `<a name>`s) of an HTML page."
    def __init__(self):
        super().__init__(); self.ids = set()
    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k == 'id' or (tag == 'a' and k == 'name'): self.ids.add(v)


@functools.lru_cache(maxsize=None)
def _fetch(url):
    "(status, body) of a URL on the local server."
    try:
        with urllib.request.urlopen(url, timeout=10) as r: return r.status, r.read()
    except urllib.error.HTTPError as e: return e.code, b''


def _ids(url):
    p = _Ids(); p.feed(_fetch(url)[1].decode('utf-8', 'replace')); return p.ids


# everything the page loads or links to, as absolute URLs (the browser resolves relative ones)
JS_REFS = """return {
  a: [...document.querySelectorAll('a[href]')].map(e => e.href),
  other: [...document.querySelectorAll('link[href], img[src], script[src], iframe[src], source[src]')].map(e => e.href || e.src),
  resources: performance.getEntriesByType('resource').map(e => e.name)};"""

# wait for every image (lazy ones included) and for MathJax's first typesetting, if the page loads MathJax
JS_SETTLE = """const done = arguments[arguments.length - 1];
const imgs = [...document.images];
imgs.forEach(i => { i.loading = 'eager'; });
const loaded = Promise.all(imgs.map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })));
const math = (window.MathJax && MathJax.startup && MathJax.startup.promise) ? MathJax.startup.promise : Promise.resolve();
Promise.all([loaded, math]).then(() => done('ok'), e => done('error: ' + e));"""

# the page's Colab badges and its sidebar links, in order
JS_PAGE = """return {
  badges: [...document.querySelectorAll('a.colab-badge')].map(a => {const i = a.querySelector('img');
            return {href: a.href, loaded: !!(i && i.complete && i.naturalWidth > 0), src: i ? i.src : null};}),
  sidebar: [...document.querySelectorAll('nav.bd-docs-nav a.reference')].map(a => a.href),
  code: [...document.querySelectorAll('article pre')].map(e => e.innerText).join('\\n')};"""

JS_IMAGES = """return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));"""

# math: source elements Sphinx writes, how many were typeset, MathJax errors, and the visible text outside code
JS_MATH = """const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
const parts = [];
const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walk.nextNode(); n; n = walk.nextNode()) {
  const el = n.parentElement;
  if (!el || el.closest(skip) || !el.getClientRects().length) continue;
  if (getComputedStyle(el).visibility === 'hidden') continue;
  parts.push(n.nodeValue);
}
const maths = [...document.querySelectorAll('.math')];
return {n_math: maths.length,
        n_typeset: maths.filter(e => e.querySelector('mjx-container')).length,
        n_containers: document.querySelectorAll('mjx-container').length,
        errors: [...document.querySelectorAll('mjx-merror, [data-mml-node="merror"]')].map(e => e.textContent),
        text: parts.join(' ')};"""


# every code block and display equation whose content is cut off: wider (or taller) than its box, which does not
# scroll, or sticking out of an ancestor that clips without scrolling; named by the nearest heading and its text
JS_CLIPPED = """const scrolls = v => v === 'auto' || v === 'scroll';
const heading = e => { for (let n = e; n; n = n.previousElementSibling || n.parentElement) {
    const h = n.matches && n.matches('h1, h2, h3, h4, .rubric') ? n : null; if (h) return h.textContent.trim().replace(/[#¶]$/, '').slice(0, 60); }
  return ''; };
const what = e => { let t = e.textContent;
  try { const m = MathJax.startup.document.getMathItemsWithin(e); if (m.length) t = m[0].math; } catch (err) {}
  return `<${e.tagName.toLowerCase()}> under "${heading(e)}": ${t.trim().replace(/\\s+/g, ' ').slice(0, 80)}`; };
const out = [];
for (const e of document.querySelectorAll('article pre, article mjx-container[display="true"]')) {
  const r = e.getBoundingClientRect();
  if (!e.getClientRects().length || r.width === 0) continue;
  const cs = getComputedStyle(e), why = [];
  if (e.scrollWidth > e.clientWidth + 1 && !scrolls(cs.overflowX))
    why.push(`content ${e.scrollWidth}px wide in a ${e.clientWidth}px box that does not scroll (overflow-x ${cs.overflowX})`);
  if (e.scrollHeight > e.clientHeight + 1 && !scrolls(cs.overflowY))
    why.push(`content ${e.scrollHeight}px tall in a ${e.clientHeight}px box that does not scroll (overflow-y ${cs.overflowY})`);
  for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
    const ac = getComputedStyle(a);
    if (ac.overflowX === 'visible') continue;
    const ar = a.getBoundingClientRect();
    if (!scrolls(ac.overflowX) && (r.right > ar.right + 1 || r.left < ar.left - 1))
      why.push(`sticks out of <${a.tagName.toLowerCase()} class="${a.className}">, which clips it (overflow-x ${ac.overflowX})`);
    break;
  }
  if (why.length) out.push(what(e) + ' -- ' + why.join('; '));
}
return out;"""

SHOT_PART = 8000   # px of page height per screenshot file (JPEG allows at most 65,500 px; 8000 px stays easy to view)


def _screenshot(driver, stem:str)->list:
    "JPEGs of the page's full height, top to bottom, in parts of at most SHOT_PART px (CDP capture beyond the viewport)."
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in [*SHOTS.glob(f'{stem}.jpg'), *SHOTS.glob(f'{stem}.png'), *SHOTS.glob(f'{stem}-part*.jpg')]: old.unlink()
    height = lambda: driver.execute_script('return document.documentElement.scrollHeight')
    width = driver.execute_script('return document.documentElement.clientWidth')
    shots, y = [], 0
    while y < height():
        h = min(SHOT_PART, height() - y)
        r = driver.execute_cdp_cmd('Page.captureScreenshot', {'format': 'jpeg', 'quality': 70, 'captureBeyondViewport': True,
                                                              'clip': {'x': 0, 'y': y, 'width': width, 'height': h, 'scale': 1}})
        shots.append(base64.b64decode(r['data'])); y += h
    paths = [SHOTS/f'{stem}.jpg'] if len(shots) == 1 else [SHOTS/f'{stem}-part{i + 1:02d}.jpg' for i in range(len(shots))]
    for path, data in zip(paths, shots): path.write_bytes(data)
    return paths


def _pages(site):
    return sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html')
                  if not p.relative_to(site).parts[0].startswith('_'))


def check_page(driver, base, page):
    "Load one page and return the list of what is wrong with it (empty when it is fine)."
    problems = []
    url = base + page
    driver.get(url)
    settled = driver.execute_async_script(JS_SETTLE)
    if settled != 'ok': problems.append(f'images/MathJax did not settle: {settled}')
    for e in driver.get_log('browser'):
        if e['level'] == 'SEVERE': problems.append(f"console error: {e['message']}")
    broken = driver.execute_script(JS_IMAGES)
    if broken: problems.append(f'broken images: {broken}')
    refs = driver.execute_script(JS_REFS)
    for r in refs['resources']:
        if urlsplit(r).scheme not in ('data', 'blob') and not r.startswith(base):
            problems.append(f'request leaving localhost: {r}')
    for href in refs['a'] + refs['other']:
        if not href.startswith(base): continue                 # external links (GitHub, Colab) are not checked
        target, frag = urldefrag(href)
        status = _fetch(target)[0]
        if status != 200: problems.append(f'broken link {href} (HTTP {status})')
        elif frag and target.endswith('.html') and frag not in _ids(target):
            problems.append(f'broken anchor {href}')
    info = driver.execute_script(JS_PAGE)
    # nbdev's processing was applied: no hidden cell (the Colab install cell is one) and no `#|` directive shown
    if 'google.colab' in info['code']: problems.append('a hidden cell is shown (the Colab install cell)')
    directive = re.search(r'^\s*#\|.*$', info['code'], re.MULTILINE)
    if directive: problems.append(f'a cell directive is shown: {directive.group(0).strip()!r}')
    info.pop('code')
    m = driver.execute_script(JS_MATH)
    for raw in ('$$', '\\(', '\\[', '\\begin{'):
        if raw in m['text']:
            i = m['text'].index(raw)
            problems.append(f'raw math {raw!r} in the page text: ...{m["text"][max(0, i-60):i+60]}...')
    raw_tex = re.search(r'\$[^$\s][^$\n]{0,80}\\[A-Za-z]+[^$\n]{0,80}\$', m['text'])  # $...\cmd...$ left as text
    if raw_tex: problems.append(f'raw TeX in the page text: {raw_tex.group(0)!r}')
    if m['n_math'] and m['n_typeset'] < m['n_math']:
        problems.append(f"math not rendered: {m['n_math'] - m['n_typeset']} of {m['n_math']} formulas have no MathJax output")
    if m['errors']: problems.append(f"MathJax errors: {m['errors'][:5]}")
    problems += [f'cut off: {c}' for c in driver.execute_script(JS_CLIPPED)]
    shots = _screenshot(driver, page.replace('/', '__').removesuffix('.html'))
    height = driver.execute_script('return document.documentElement.scrollHeight')
    return problems, {**info, 'n_math': m['n_math'], 'shots': shots, 'height': height}


# ---------------------------------------------------------------- tests
@pytest.fixture(scope='module')
def checked(driver, site, server):
    "Every page of the site loaded once in Chromium and checked: {page: (problems, info)}; screenshots saved."
    pages = _pages(site)
    return {page: check_page(driver, server, page) for page in pages}


def test_every_page(checked):
    "Every page loads cleanly: no console error, nothing fetched from outside, no broken image/link/anchor, math rendered."
    assert 'index.html' in checked and 'search.html' in checked, list(checked)
    report = {page: problems for page, (problems, _) in checked.items() if problems}
    assert not report, 'problems in the docs site:\n' + json.dumps(report, indent=1)
    n_math = sum(info['n_math'] for _, info in checked.values())
    print(f'{len(checked)} pages checked, {n_math} formulas rendered, screenshots in {SHOTS.relative_to(ROOT)}')


def test_one_page_per_notebook_with_colab_badge(checked, server):
    "Each notebook has its page, with one 'Open in Colab' badge (a local image) linking to the notebook on GitHub."
    cfg = _cfg()
    user, repo = cfg['git_url'].rstrip('/').split('/')[-2:]
    for rel, page in _notebooks():
        assert page in checked, f'no page {page} for notebook {rel}: run `make docs` and read what it reports'
        badges = checked[page][1]['badges']
        want = f"https://colab.research.google.com/github/{user}/{repo}/blob/{cfg['branch']}/{cfg['nbs_path']}/{rel.as_posix()}"
        assert len(badges) == 1, f'{page}: expected one Colab badge, found {badges}'
        assert badges[0]['href'] == want, f"{page}: Colab link {badges[0]['href']} is not {want}"
        assert badges[0]['loaded'] and badges[0]['src'].startswith(server), f'{page}: badge image not a loaded local file {badges[0]}'


def test_sidebar_in_reading_order(checked, server):
    "The sidebar lists the front page first, then the notebooks in their numbered order."
    links = [urldefrag(u)[0].removeprefix(server) or 'index.html' for u in checked['index.html'][1]['sidebar']]
    want = [page for _, page in _notebooks()]
    got = [n for n in links if n in want]
    assert got == want, f'sidebar order {got} is not the reading order {want}'


def test_search_finds_a_page(driver, site, server):
    "Sphinx's search page finds a notebook page by a word of its title."
    from selenium.webdriver.support.ui import WebDriverWait
    nbs = [page for _, page in _notebooks() if page != 'index.html'] or ['index.html']
    page = nbs[0]
    driver.get(server + page)
    title = driver.execute_script("return document.querySelector('article h1').textContent")
    word = max(re.findall(r'[A-Za-z]{4,}', title), key=len, default=None)
    assert word, f'{page} has no title word to search for: {title!r}'
    driver.get(server + f'search.html?q={word}')
    results = WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        "const r = [...document.querySelectorAll('#search-results ul.search li a')].map(a => a.getAttribute('href'));"
        "return r.length ? r : null;"))
    assert any(r.split('#')[0].split('?')[0] == page for r in results), f'search for {word!r} gave {results}, not {page}'
    _screenshot(driver, f'search-{word}')


JS_ENTRY = """const anchor = document.getElementById(arguments[0]);
if (!anchor) return null;
const parts = [];    // the elements of the entry: from its anchor to the next entry's rule
for (let n = anchor.closest('p') || anchor; (n = n.nextElementSibling) && !n.matches('hr.nbdev-sep');) parts.push(n);
const table = parts.map(n => n.querySelector('table')).find(t => t);
const rows = table ? [...table.querySelectorAll('tbody tr')].map(tr => [...tr.cells].map(c => c.innerText.trim())) : [];
const pre = parts.map(n => n.querySelector('pre')).find(p => p);
return {code: pre ? pre.innerText : '', rows: rows,
        head: table ? [...table.querySelectorAll('thead th')].map(c => c.innerText.trim()) : []};"""


def test_api_page_shows_trainconfig_as_a_class_with_field_docs(driver, site, server):
    "The API page renders the dataclass `TrainConfig` as a class, its fields in a table with each field's `# comment` beside it."
    from fastcore.docments import docments
    from supercm_nb.train import TrainConfig
    driver.get(server + 'api.html')
    entry = driver.execute_script(JS_ENTRY, 'train.TrainConfig')
    assert entry, 'api.html has no entry `train.TrainConfig` (docs/build.py writes one per exported name)'
    assert re.search(r'^class TrainConfig\b', entry['code'], re.MULTILINE) and 'def TrainConfig' not in entry['code'], \
        f"TrainConfig's signature is not a class: {entry['code']!r}"
    assert entry['head'][:1] == ['Field'] and 'Description' in entry['head'], f"no field table: {entry['head']}"
    fields = {r[0]: r[entry['head'].index('Description')] for r in entry['rows'] if len(r) == len(entry['head'])}
    # the comment is markdown: compare its text (links and code marks gone) with the text the page shows
    norm = lambda t: ' '.join(re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', t or '').replace('`', '').split())
    for name, doc in docments(TrainConfig).items():
        if name == 'return' or not doc: continue
        assert name in fields, f'TrainConfig field {name} missing from the API table: {sorted(fields)}'
        assert norm(doc) == norm(fields[name]), f'field {name}: description {fields[name]!r}, its comment says {doc!r}'
    assert norm(fields.get('labels')), "the `labels` field has no description"


def test_screenshots_cover_every_page(checked):
    "Each page's screenshots, stacked, are as tall as the page (so the lower half of a long page is seen too)."
    from PIL import Image
    for page, (_, info) in checked.items():
        assert info['shots'], f'{page}: no screenshot'
        tall = sum(Image.open(p).height for p in info['shots'])
        assert tall >= info['height'], f'{page}: screenshots cover {tall} of {info["height"]} px'


def test_build_had_no_warnings(site):
    "Sphinx reported no warning (a warning is a page that renders wrong: a bad reference, directive or image)."
    log = site.parent/'warnings.txt'
    if not log.exists(): pytest.skip('docs/_build/warnings.txt missing: the site was not built by docs/build.py')
    warnings = [l for l in log.read_text(encoding='utf-8').splitlines() if 'WARNING' in l or 'ERROR' in l]
    assert not warnings, 'Sphinx warnings while building the site (`make docs` prints them):\n' + '\n'.join(warnings)
