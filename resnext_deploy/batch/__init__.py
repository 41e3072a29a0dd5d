"""``predict --ray``: classify a collection on Ray Data, resumable, each input exactly once.

``config`` (the settings), ``source`` (which images), ``ledger`` (the output folder: shards
written atomically, resumed by what is there), ``stages`` (decode and inference, plain numpy
and onnxruntime, as Ray Data calls them) and ``run`` (the Ray Data pipeline). Only ``run``
imports Ray.
"""
