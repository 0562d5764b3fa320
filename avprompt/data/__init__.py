"""Datasets, tasks, few-shot protocols, metrics and the media cache.

Modules (import what you need; this package imports nothing at load time):

* ``records``: ``ClipRecord`` / ``DatasetIndex``, the shape every reader produces;
* ``ave``, ``llp``, ``vggsound``, ``manifest``: readers; ``datasets.load_dataset(name, root)``
  dispatches ``ave | llp | vggsound | vggsound40k | manifest:FILE``; ``export_manifest``;
* ``tasks``: ``task_spec``, ``targets``; ``splits``: ``make_split`` / ``Split``;
  ``metrics``: ``compute_metrics``; ``stats``: ``stats(dataset, root, protocol)``;
* ``media`` (PyAV decoding), ``prepare`` (on-disk cache, ``prepare`` / ``load_clip``),
  ``testmedia`` (tiny synthetic mp4s for tests and benchmarks).
"""
