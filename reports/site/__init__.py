"""The static site builder: ``index.html``, a page per spec, a page per experiment.

Layout of the site (every link relative, so it works from disk and from any static server)::

    SITE/index.html                               every spec: status, progress, best result
    SITE/data.json                                what a live index polls to know it is stale
    SITE/assets/{plotly.min.js,site.css,site.js}  written once; plotly.js from the installed package
    SITE/specs/<slug>/index.html                  recommendation, charts, experiment table
    SITE/specs/<slug>/data.json                   what a live spec page polls
    SITE/specs/<slug>/experiments/<id>.html       load points, command line, timings, log tail
    SITE/.autotuner-site.json                     the manifest of input hashes

**Incremental** (after coverage.py's ``status.json``): the manifest records, per spec, a hash of
every input file and of the code that renders them (templates, this package, plotly's version,
the site title). A rebuild reads no record of a spec whose hash did not change; inside a changed
spec only the experiment pages whose own record changed are rewritten (records are written once
and never rewritten, so usually just the new ones). To avoid even reading unchanged files, a
file's hash is reused while its size and modification time match — except for files modified
within :data:`RACY_NS` of the build that hashed them, which are hashed again (git's "racily
clean" rule: a same-size rewrite inside the file system's timestamp granularity would otherwise
go unnoticed). Pages of specs whose results disappeared are removed.

Pages are written to a temporary file and renamed, so a web server never serves half a page. They
are not fsynced: unlike results, the site can always be rebuilt, and ten thousand fsyncs would
dominate the build. A lock file serializes builders (the daemon and a manual ``autotuner report``).

Modules: :mod:`~.build` (the build), :mod:`~.pages` (one spec's pages, the unit of work a
worker runs), :mod:`~.inputs` (the manifest, the fingerprint, input hashes) and :mod:`~.files`
(the page writer, the lock, the assets).
"""

from __future__ import annotations

from reports.site.build import BuildResult, build_site

__all__ = ["BuildResult", "build_site"]
