"""A stand-in FlashMM application: the consumer of what deploy renders.

The local and test compose stacks run it as their ``flashmm`` service (image
``localhost/flashmm-standin:dev``).  It is the seed's ``ConfigManager`` done properly: the four
configuration layers with provenance, the Redis runtime layer kept current through
``flashmm:config:updates``, a steady Redis workload whose counters show whether a secret rotation
failed any operation, the encrypted-records contract (``secure_records``), and a small JSON API.

It runs in a container that has only Debian's ``python3`` with ``python3-yaml`` and
``python3-cryptography``, so it imports nothing but the standard library, ``yaml``,
``cryptography`` and three standard-library modules of this package: ``redis_client``,
``redis_url`` and ``env_strings`` (``scripts/build-images.sh`` copies exactly those).

Modules:

* ``config_layers``   fields.json (the schema, generated) and the pure layer functions;
* ``config_state``    one process's layers, last good of each, effective view;
* ``runtime_keys``    reading the runtime layer from Redis (SCAN, never KEYS);
* ``redis_link``      the app's long-lived connection, workload loop, counters, health;
* ``subscriber``      the pub/sub connection (config and meta update channels);
* ``secure_records``  the encrypted-records contract and the ``/secure`` counts;
* ``http_api``        the JSON endpoints and the server;
* ``event_log``       one flushed line per event on stdout, secrets masked;
* ``app``             wiring, start-up checks, signals (``python3 -m flashmm_deploy.standin``).
"""
