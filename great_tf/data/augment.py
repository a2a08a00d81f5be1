"""The paper's CIFAR augmentation (pad 4, random crop, optional horizontal flip), stateless.

Randomness comes from a per-batch seed that `train_dataset` derives from (run seed, batch index),
so augmented epochs are reproducible and a resumed run sees the same crops.
"""

import tensorflow as tf


def pad_crop_flip(images, seed, pad=4, flip=True):
    """Each image zero-padded by `pad`, randomly cropped back, and (if `flip`) randomly mirrored."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform([shape[0], 2], seed, 0, 2 * pad + 1, dtype=tf.int32)

    def crop(args):
        image, offset = args
        return tf.slice(image, [offset[0], offset[1], 0], [height, width, shape[3]])

    out = tf.map_fn(crop, (padded, offsets), fn_output_signature=images.dtype)
    if flip:
        mirror = tf.random.stateless_uniform([shape[0], 1, 1, 1], seed + 1) < 0.5
        out = tf.where(mirror, tf.reverse(out, axis=[2]), out)
    return out


def augment_images(pad=4, flip=True):
    """An `augment(batch, seed)` for `train_dataset` over (images, labels) batches."""

    def augment(batch, seed):
        images, labels = batch
        return pad_crop_flip(images, seed, pad, flip), labels

    return augment
