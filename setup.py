"""setup.py in nbdev 2's form: metadata comes from settings.ini."""
from configparser import ConfigParser
from pathlib import Path
import setuptools

here = Path(__file__).resolve().parent
cfg = ConfigParser(delimiters=['='])
if not cfg.read(here / 'settings.ini'): raise SystemExit(f"setup.py: {here / 'settings.ini'} not found (it holds the package metadata)")
cfg = cfg['DEFAULT']
# settings.ini leaves git_url and author_email empty while the project has no public repository
STATUSES = {1: 'Planning', 2: 'Pre-Alpha', 3: 'Alpha', 4: 'Beta', 5: 'Production/Stable', 6: 'Mature', 7: 'Inactive'}
urls = {'Source': cfg['git_url']} if cfg.get('git_url') else {}

setuptools.setup(
    name=cfg.get('dist_name', cfg['lib_name']),
    version=cfg['version'],
    description=cfg['description'],
    author=cfg['author'],
    author_email=cfg.get('author_email') or None,
    license='Apache-2.0',
    keywords=cfg['keywords'].split(),
    # settings.ini's status and audience as nbdev's own setup.py maps them; the license is `license` above (setuptools
    # deprecates the License :: classifiers, and warned at every build)
    classifiers=[f"Development Status :: {cfg['status']} - {STATUSES[int(cfg['status'])]}",
                 f"Intended Audience :: {cfg['audience']}", 'Programming Language :: Python :: 3',
                 'Programming Language :: Python :: 3 :: Only', 'Topic :: Scientific/Engineering :: Artificial Intelligence'],
    project_urls=urls,
    url=urls.get('Source'),
    packages=setuptools.find_packages(include=['pat', 'pat.*']),
    python_requires='>=' + cfg['min_python'],
    install_requires=cfg['requirements'].split(),
    extras_require={'pipeline': cfg['pipeline_requirements'].split(),
                    'dev': cfg['pipeline_requirements'].split() + cfg['dev_requirements'].split()},
    long_description=(here / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    entry_points={'console_scripts': ['pat-bench=pat.bench:main'],
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
