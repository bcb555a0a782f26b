"""In-process embedders: the `embed` role answered by ONNX Runtime inside Garrison's process.

`graph` writes a BERT sentence encoder as ONNX from a local model folder, `convert` caches that
conversion (optionally int8), `onnx` runs it. Nothing here reaches a network or imports torch.
"""
