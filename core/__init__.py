"""The ground floor of rankwise: what every other package may import, importing nothing of theirs.

* :mod:`rankwise.core.paths`: the data and cache folders (``$RANKWISE_DATA``, ``$RANKWISE_CACHE``);
* :mod:`rankwise.core.model_dir`: reading and writing a model directory's ``rankwise.json``
  (:class:`~rankwise.core.model_dir.ModelDirError`);
* :mod:`rankwise.core.io`: line-numbered JSONL reading with :class:`~rankwise.core.io.DatasetError`;
* :mod:`rankwise.core.outputs`: the output rule of every command (refuse an existing output unless
  ``--overwrite``, :class:`~rankwise.core.outputs.OutputError`) and atomic file / directory writes;
* :mod:`rankwise.core.device`: ``--device`` / ``--dtype`` names turned into torch objects;
* :mod:`rankwise.core.cli_options`: the flags several commands share (``--device``, ``--data-dir``, ``--overwrite``).
"""
