"""Everything that imports TensorRT, of either flavour; no module outside this package imports ``tensorrt`` or
``tensorrt_rtx`` (tests/test_architecture.py holds that).

* ``flavours``: TensorRT and TensorRT for RTX as records (where their engines run, how their files begin), and
  the one import of either module (``import_tensorrt``).
* ``capabilities``: the compute capabilities a build targets, and whether an engine runs on this GPU.
* ``messages``: TensorRT's log, per call and per thread; ``plugins``: plugin libraries, none unless named.
* ``builder``: ONNX -> engine (strongly typed, one batch profile), Ctrl-C and the garbage collector handled.
* ``engine``: an engine deserialized once and run from any thread (contexts, buffers, CUDA graphs, timing);
  ``times``: the GPU time split of one call, which the Backend interface reports.
* ``rtx``: TensorRT for RTX's own calls (target compute capabilities, engine validity, the runtime cache).

It sits with the neutral modules: the artifact table names each flavour's engine files.
"""
