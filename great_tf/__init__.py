"""Gradient Adversarial Training (GREAT; Sinha, Chen, Badrinarayanan, Rabinovich, 2018).

Submodules are imported on demand so that `import great_tf` stays cheap:
`great_tf.layers`, `great_tf.models`, `great_tf.data`, `great_tf.mtl`, ...
"""

__version__ = "0.1.0"
