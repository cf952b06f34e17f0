"""HTTP reconstruction service on Ray Serve: a scene in, a fused point cloud out.

A thin layer over the core ``mvs`` library (which never imports Ray). Modules:

* ``config``   service limits and settings (``ServiceConfig``), read from the Serve config YAML
* ``errors``   ``RequestError``: an HTTP status, a short code and a message naming the problem
* ``options``  request options (``max_dim``, ``num_sources``, fusion thresholds, ``output``)
* ``uploads``  multipart/archive unpacking into a per-request temporary directory, validation
* ``payload``  the validated scene as bytes, sent from the ingress to a model replica
* ``engine``   reconstruction of a payload with a loaded model, as a stream of events (no Ray)
* ``jobs``     the asynchronous job table with result expiry (no Ray)
* ``app``      the Ray Serve deployments (FastAPI ingress + model) and ``build_app``
* ``launch``   ``mvs serve``: start Ray and Serve locally from the Serve config YAML
* ``client``   Python client (``requests``) and ``mvs client``

Only ``app`` and ``launch`` import Ray; the client works without it.
"""

API_VERSION = "v1"
