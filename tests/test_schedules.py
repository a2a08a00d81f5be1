"""The poly schedules: values against a NumPy computation, in the dtype they are read in."""

import numpy as np
import pytest
import tensorflow as tf

from great_tf.schedules import EpochPolySchedule, PolyDecay, PolyRamp, poly_adam, scheduled_value


def numpy_multiplier(epoch, epochs, power=0.9):
    return np.maximum(np.float64(1.0) - np.float64(epoch) / np.float64(epochs), 0.0) ** np.float64(power)


@pytest.mark.parametrize("step, epoch", [(0, 0), (9, 0), (10, 1), (25, 2), (39, 3)])
def test_float64_ramp_is_exactly_max_times_one_minus_m_in_float64(step, epoch):
    ramp = PolyRamp(0.7, steps_per_epoch=10, epochs=4)
    value = scheduled_value(ramp, tf.constant(step, tf.int64), tf.float64)
    assert value.dtype == tf.float64
    assert float(value) == 0.7 * (1.0 - numpy_multiplier(epoch, 4))  # bit for bit, not approx


def test_float64_decay_is_exactly_lr_times_m_in_float64():
    decay = PolyDecay(0.7, steps_per_epoch=3, epochs=5)
    for step in range(15):
        value = decay(step, tf.float64)
        assert value.dtype == tf.float64
        assert float(value) == 0.7 * numpy_multiplier(step // 3, 5)


def test_a_float64_constant_is_not_widened_from_float32():
    value = scheduled_value(0.7, 0, "float64")
    assert value.dtype == tf.float64 and float(value) == 0.7
    assert float(scheduled_value(0.7, 0)) == float(np.float32(0.7))  # float32 stays the default


def test_the_last_epoch_of_a_float64_ramp_is_not_the_float32_value():
    ramp = PolyRamp(0.7, steps_per_epoch=1, epochs=2)
    wide, narrow = float(ramp(1, tf.float64)), float(ramp(1))
    assert wide == 0.7 * (1.0 - 0.5 ** 0.9)
    assert wide != narrow and narrow == pytest.approx(wide, rel=1e-6)


def test_float16_reads_compute_in_float32_then_round_once():
    ramp = PolyRamp(2.0, steps_per_epoch=1, epochs=3)
    value = scheduled_value(ramp, 2, tf.float16)
    assert value.dtype == tf.float16
    assert float(value) == float(np.float16(np.float32(ramp(2))))


def test_a_plain_callable_is_cast_to_the_requested_dtype():
    value = scheduled_value(lambda step: tf.cast(step, tf.float32) * 0.5, tf.constant(3), tf.float64)
    assert value.dtype == tf.float64 and float(value) == 1.5


def test_the_optimizer_still_reads_a_float32_learning_rate():
    optimizer = poly_adam(1e-3, steps_per_epoch=2, epochs=4)
    optimizer.iterations.assign(4)  # epoch 2 of 4
    rate = optimizer.learning_rate
    assert rate.dtype == tf.float32
    assert float(rate) == pytest.approx(1e-3 * 0.5 ** 0.9, rel=1e-6)


@pytest.mark.parametrize("schedule", [PolyDecay(0.1, 7, 30, 0.8), PolyRamp(2.5, 5, 12)])
def test_config_round_trip_keeps_every_argument(schedule):
    config = schedule.get_config()
    restored = type(schedule).from_config(config)
    assert restored.get_config() == config
    assert set(config) == {"steps_per_epoch", "epochs", "power",
                           "initial_learning_rate" if isinstance(schedule, PolyDecay) else "max_value"}
    for step in (0, 13, 40):
        assert float(restored(step, tf.float64)) == float(schedule(step, tf.float64))


def test_both_schedules_share_one_base():
    assert issubclass(PolyDecay, EpochPolySchedule) and issubclass(PolyRamp, EpochPolySchedule)
    assert "get_config" not in vars(PolyDecay) and "get_config" not in vars(PolyRamp)
