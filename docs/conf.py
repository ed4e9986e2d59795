"""Sphinx configuration of the documentation site (built by docs/build.py; don't run sphinx-build on nbs/ directly).

The source folder is docs/_build/src, which build.py writes from nbdev's processed notebooks.
Project facts come from settings.ini, as nbdev's own site takes them.
"""
from configparser import ConfigParser
from pathlib import Path

_ini = ConfigParser(delimiters=['='])
_ini.read(Path(__file__).absolute().parents[1]/'settings.ini', encoding='utf-8')
_cfg = _ini['DEFAULT']

project = _cfg['title']
author = _cfg['author']
copyright = _cfg['copyright']
release = version = _cfg['version']

extensions = ['myst_nb', 'sphinx.ext.githubpages']   # githubpages: a .nojekyll file, so _static survives any Pages setup
root_doc = 'index'
exclude_patterns = ['**.ipynb_checkpoints']
language = 'en'

# notebooks: never executed here; their stored outputs are the content
nb_execution_mode = 'off'
nb_merge_streams = True
nb_render_markdown_format = 'myst'    # show_doc's markdown (tables, math, html) parsed like the notebook's own markdown
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'attrs_block', 'attrs_inline']
myst_dmath_double_inline = True       # $$...$$ inside a paragraph is display math, as in Jupyter
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type']
smartquotes = False                   # quotes as written (and as Jupyter shows them): 'all' in an API table is a value

# maths: MathJax 3 served from the site itself (docs/_static/mathjax, copied there by build.py from the npm package)
mathjax_path = 'mathjax/tex-svg.js'
# without `noundefined`, an unknown macro is a MathJax error (which tests/test_docs_site.py finds), not quiet red text
mathjax3_config = {'tex': {'packages': {'[-]': ['noundefined']}}, 'svg': {'fontCache': 'global'}}

html_theme = 'sphinx_book_theme'
html_title = _cfg['title']
html_baseurl = _cfg['doc_host'].rstrip('/') + '/' + _cfg['doc_baseurl'].strip('/') + '/'
html_static_path = ['_static']
html_css_files = ['supercm.css']
html_favicon = '_static/favicon.svg'
html_last_updated_fmt = None
# notebook figures are drawn on white; an explicit mode also avoids the theme's console error on a first visit
html_context = {'default_mode': 'light'}
html_theme_options = {
    'repository_url': _cfg['git_url'],
    'repository_branch': _cfg['branch'],
    'path_to_docs': _cfg['nbs_path'],
    'use_repository_button': True,
    'use_download_button': True,
    'home_page_in_toc': True,
    'show_navbar_depth': 1,
    'show_toc_level': 2,
    'navigation_with_keys': False,
}
