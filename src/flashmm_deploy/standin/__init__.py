"""A stand-in FlashMM application: the consumer of what deploy renders.

The local and test compose stacks run it as their ``flashmm`` service (image
``localhost/flashmm-standin:dev``).  It is built on the client library FlashMM imports,
``flashmm_config`` (``StandIn`` is a ``ConfigManager``): the four configuration layers with
provenance, the Redis runtime layer kept current through ``flashmm:config:updates`` and caught
up by ``flashmm:meta:version``, the file poll; plus its own parts: a steady Redis workload whose
counters show whether a secret rotation failed any operation, the encrypted-records contract
(``secure_records``), and a small JSON API.  So every stack test exercises the library.

It runs in a container that has only Debian's ``python3`` with ``python3-yaml`` and
``python3-cryptography``, so it imports nothing but the standard library, ``yaml``,
``cryptography``, the library's reading parts (``src/flashmm_config``, no pydantic until a
runtime set, which the stand-in never makes) and the standard-library modules of this
package it needs: ``redis/`` (the client), ``redis_ext/`` (URLs, pub/sub) and
``config/env_strings.py`` (``scripts/build-images.sh`` copies exactly those, with the packages'
``__init__.py``).

Modules:

* ``secure_records``  the encrypted-records contract and the ``/secure`` counts;
* ``http_api``        the JSON endpoints and the server;
* ``event_log``       one flushed line per event on stdout, secrets masked;
* ``app``             ``StandIn``, start-up checks, signals (``python3 -m flashmm_deploy.standin``).
"""
