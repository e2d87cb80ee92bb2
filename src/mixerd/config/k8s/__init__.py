"""Configuration from Kubernetes custom resources (``mixerd serve --config k8s://``).

* :mod:`~mixerd.config.k8s.kinds`: the table of resource kinds read from the cluster;
* :mod:`~mixerd.config.k8s.target`: the ``k8s://`` URL and how it picks a connection config;
* :mod:`~mixerd.config.k8s.mirror`: list and watch results kept per collection, parsed into
  resources (no I/O);
* :mod:`~mixerd.config.k8s.status`: Kubernetes Events describing a resource's problems,
  deduplicated (no I/O);
* :mod:`~mixerd.config.k8s.api`: the HTTP client (list, watch, create) and the list-then-watch loop;
* :mod:`~mixerd.config.k8s.store`: :class:`~mixerd.config.k8s.store.KubeStore`, the
  :class:`~mixerd.config.store.Store` that ties them together.

Import the submodules directly: importing this package loads no HTTP client.
"""
