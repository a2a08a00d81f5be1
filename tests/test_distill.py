"""GREAT distillation (Algorithm 2) and its baselines: every gradient against an independent
computation, float64 finite differences under double backprop."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from great_tf import distill
from great_tf.models import cnn5, cnn5_discriminator


def tiny_data(n=4, shape=(6, 6, 2), classes=3, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, *shape)).astype(dtype)
    return tf.constant(x), tf.constant(np.arange(n) % classes, tf.int32)


def tiny_cnn5(seed, shape=(6, 6, 2), classes=3):
    keras.utils.set_random_seed(seed)
    return cnn5(shape, classes, width=2, hidden=4)


# -- independent objectives, written out without the library's helpers -----------------------------

def input_grad(model, x, y, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x, training=training)
        ce = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    return tape.gradient(ce, x), ce


def great_objective(student, teacher, disc, x, y, alpha):
    """(1 - alpha) * CE - alpha * [BCE(f(g_t), 1) + BCE(f(g_s), 0)], summed and divided by the
    batch: the student ascends the discriminator's whole loss on the joint batch (its BatchNorm
    makes the teacher term depend on g_s through the batch statistics)."""
    g_t, _ = input_grad(teacher, x, y, False)
    g_s, ce = input_grad(student, x, y, True)
    d = disc(tf.concat([g_t, g_s], 0), training=True)
    bce_teacher = tf.reduce_sum(tf.math.softplus(-d[: x.shape[0]]))  # -log(sigmoid(d))
    bce_student = tf.reduce_sum(tf.math.softplus(d[x.shape[0]:]))  # -log(1 - sigmoid(d))
    return ((1 - alpha) * ce - alpha * (bce_teacher + bce_student)) / x.shape[0]


def sobolev_objective(student, teacher, x, y, alpha):
    g_t, _ = input_grad(teacher, x, y, False)
    g_s, ce = input_grad(student, x, y, True)
    return ((1 - alpha) * ce + alpha * tf.reduce_sum(tf.square(g_s - g_t))) / x.shape[0]


def finite_difference_check(variables, analytic, objective, seed=0, eps=1e-6):
    """Directional derivatives along random directions, per variable: central differences."""
    rng = np.random.default_rng(seed)
    for var, grad in zip(variables, analytic):
        direction = rng.normal(size=var.shape)
        original = var.numpy()
        var.assign(original + eps * direction)
        plus = float(objective())
        var.assign(original - eps * direction)
        minus = float(objective())
        var.assign(original)
        numeric = (plus - minus) / (2 * eps)
        exact = float(np.sum(grad.numpy() * direction))
        assert abs(numeric - exact) <= 1e-6 * max(1.0, abs(exact)), (var.path, numeric, exact)


def tiny_great_pair():
    """(x, y, student, teacher, discriminator) in float64 for the finite-difference checks."""
    x, y = tiny_data(dtype="float64")
    student, teacher = tiny_cnn5(1), tiny_cnn5(2)
    keras.utils.set_random_seed(3)
    return x, y, student, teacher, cnn5_discriminator((6, 6, 2), width=2, hidden=4)


def test_great_student_gradient_matches_float64_finite_differences(float64):
    x, y, student, teacher, disc = tiny_great_pair()
    model = distill.GreatDistiller(teacher, student, disc, alpha=0.3)
    grads, _, _ = model.student_gradients(x, y)
    # The reversed term must matter: the gradient differs from the plain CE gradient's share.
    ce_only = distill.GreatDistiller(teacher, student, disc, alpha=0.0).student_gradients(x, y)[0]
    assert max(float(tf.reduce_max(tf.abs(g - 0.7 * c))) for g, c in zip(grads, ce_only)) > 1e-6
    finite_difference_check(student.trainable_variables, grads,
                            lambda: great_objective(student, teacher, disc, x, y, 0.3))


def test_great_discriminator_gradient_matches_finite_differences(float64):
    x, y, student, teacher, disc = tiny_great_pair()
    model = distill.GreatDistiller(teacher, student, disc, alpha=0.3)
    _, disc_grads, _, _ = model.great_gradients(x, y)

    def disc_objective():
        g_t, _ = input_grad(teacher, x, y, False)
        g_s, _ = input_grad(student, x, y, True)
        d = tf.reshape(disc(tf.concat([g_t, g_s], 0), training=True), [-1])
        n = x.shape[0]
        return (tf.reduce_sum(tf.math.softplus(-d[:n])) + tf.reduce_sum(tf.math.softplus(d[n:]))) / n

    finite_difference_check(disc.trainable_variables, disc_grads, disc_objective)


def test_sobolev_student_gradient_matches_float64_finite_differences(float64):
    x, y = tiny_data(dtype="float64")
    student, teacher = tiny_cnn5(1), tiny_cnn5(2)
    model = distill.SobolevStudent(teacher, student, alpha=0.4)
    grads, _, _ = model.student_gradients(x, y)
    finite_difference_check(student.trainable_variables, grads,
                            lambda: sobolev_objective(student, teacher, x, y, 0.4))


def test_teacher_receives_no_update_and_the_others_do():
    x, y = tiny_data(n=8)
    student, teacher = tiny_cnn5(1), tiny_cnn5(2)
    disc = cnn5_discriminator((6, 6, 2), width=2, hidden=4)
    teacher_before = [v.numpy().copy() for v in teacher.weights]
    student_before = [v.numpy().copy() for v in student.trainable_variables]
    disc_before = [v.numpy().copy() for v in disc.trainable_variables]
    for method in ("great", "sobolev", "distill"):
        model = distill.build_distiller(method, teacher, student, disc)
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      **({"discriminator_optimizer": keras.optimizers.Adam(1e-2)}
                         if method == "great" else {}))
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        assert not model.trainable_variables or all(
            not any(v is w for w in teacher.weights) for v in model.optimizer.variables)
    for before, after in zip(teacher_before, teacher.weights):  # moving statistics included
        np.testing.assert_array_equal(before, after.numpy(), err_msg=after.path)
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(student_before, student.trainable_variables))
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(disc_before, disc.trainable_variables))


def constant_discriminator(shape, bias):
    """A discriminator whose logit is `bias` for every input (zero kernel)."""
    inputs = keras.Input(shape)
    dense = keras.layers.Dense(1, kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(bias))
    return keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))


def test_discriminator_losses_on_known_logits():
    teacher_logits = tf.constant([0.0, 2.0, -1.0])
    student_logits = tf.constant([0.0, -3.0, 0.5])
    bce_t, bce_s = distill.discriminator_losses(teacher_logits, student_logits)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    np.testing.assert_allclose(bce_t, -np.log(sigmoid(np.array([0.0, 2.0, -1.0]))), rtol=1e-6)
    np.testing.assert_allclose(bce_s, -np.log(1 - sigmoid(np.array([0.0, -3.0, 0.5]))), rtol=1e-6)


@pytest.mark.parametrize("bias", [1.5, -0.5])
def test_discriminator_loss_accuracy_and_gradient_in_a_step(bias):
    x, y = tiny_data(n=4)
    disc = constant_discriminator((6, 6, 2), bias)
    model = distill.GreatDistiller(teacher=tiny_cnn5(2), student=tiny_cnn5(1), discriminator=disc,
                                   alpha=0.1)
    _, disc_grads, _, tracked = model.great_gradients(x, y)
    sigmoid = 1 / (1 + np.exp(-bias))
    expected_loss = -np.log(sigmoid) - np.log(1 - sigmoid)
    np.testing.assert_allclose(tracked[model.disc_loss_tracker], [expected_loss] * 4, rtol=1e-5)
    np.testing.assert_array_equal(tracked[model.disc_teacher_accuracy], [float(bias > 0)] * 4)
    np.testing.assert_array_equal(tracked[model.disc_student_accuracy], [float(bias < 0)] * 4)
    # d/db of [sum -log s(b) + sum -log(1 - s(b))] / B = (s(b) - 1) + s(b).
    np.testing.assert_allclose(disc_grads[1], [2 * sigmoid - 1], rtol=1e-5)


def test_hinton_loss_against_a_hand_computation():
    s = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    t = np.array([[2.0, 0.0, -1.0], [-1.0, 4.0, 1.0]])
    labels = np.array([0, 2])
    alpha, temperature = 0.3, 4.0

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    ce = -np.log(softmax(s)[np.arange(2), labels])
    p_t, p_s = softmax(t / temperature), softmax(s / temperature)
    kl = np.sum(p_t * np.log(p_t / p_s), axis=1)
    expected = (1 - alpha) * ce + alpha * temperature**2 * kl  # the T^2 factor
    got = distill.hinton_loss(tf.constant(labels), tf.constant(s, tf.float32),
                              tf.constant(t, tf.float32), alpha, temperature)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # T^2 matters: without it the value differs.
    assert not np.allclose(got, (1 - alpha) * ce + alpha * kl, rtol=1e-3)


def test_hinton_distiller_objective_is_the_batch_mean_of_the_hand_loss():
    x, y = tiny_data(n=4)
    student, teacher = tiny_cnn5(1), tiny_cnn5(2)
    model = distill.HintonDistiller(teacher, student, alpha=0.5, temperature=3.0)
    loss, logits, _ = model.objective(x, y, tf.constant(4.0))
    expected = distill.hinton_loss(y, logits, teacher(x, training=False), 0.5, 3.0)
    np.testing.assert_allclose(float(loss), float(tf.reduce_mean(expected)), rtol=1e-5)


def dense_net(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Flatten(),
                             keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(3)])


def test_sobolev_term_is_zero_when_student_equals_teacher():
    x, y = tiny_data(n=4)
    teacher = dense_net(0)
    student = keras.models.clone_model(teacher)
    student.set_weights(teacher.get_weights())
    model = distill.SobolevStudent(teacher, student, alpha=0.5)
    loss, logits, tracked = model.objective(x, y, tf.constant(4.0))
    np.testing.assert_allclose(tracked[model.sobolev_tracker], np.zeros(4), atol=1e-12)
    np.testing.assert_allclose(float(loss), 0.5 * float(tf.reduce_mean(distill.cross_entropy(y, logits))),
                               rtol=1e-6)
    other = distill.SobolevStudent(teacher, dense_net(1), alpha=0.5)
    assert float(tf.reduce_min(other.objective(x, y, tf.constant(4.0))[2][other.sobolev_tracker])) > 0


def test_input_gradients_are_per_example():
    """g depends on an example alone, not on the batch it came in (summed, not mean, loss)."""
    x, y = tiny_data(n=4)
    teacher = dense_net(0)
    model = distill.CrossEntropyStudent(teacher, dense_net(1))
    full = model.teacher_input_gradients(x, y)
    half = model.teacher_input_gradients(x[:2], y[:2])
    np.testing.assert_allclose(full[:2], half, rtol=1e-5, atol=1e-8)


def test_methods_need_a_teacher_and_known_names():
    with pytest.raises(distill.GreatError, match="needs a teacher"):
        distill.build_distiller("distill", None, dense_net(0))
    with pytest.raises(distill.GreatError, match="unknown method"):
        distill.build_distiller("kd", None, dense_net(0))


def test_load_teacher_errors(tmp_path):
    with pytest.raises(distill.GreatError, match="does not exist"):
        distill.load_teacher(str(tmp_path / "missing.keras"))
    with pytest.raises(distill.GreatError, match="no teacher"):
        distill.load_teacher(None)
    path = str(tmp_path / "teacher.keras")
    dense_net(0).save(path)
    with pytest.raises(distill.GreatError, match="3 outputs"):
        distill.load_teacher(path, num_classes=10)
    teacher = distill.load_teacher(path, num_classes=3)
    assert not teacher.trainable_variables


def test_a_frozen_network_evaluates_on_float64_batches():
    """The trainer's teacher accuracy: a frozen teacher (no trainable variables) wrapped in a
    CrossEntropyStudent, fed NumPy float64 images."""
    keras.utils.set_random_seed(0)
    teacher = cnn5((8, 8, 3), 3, width=4, hidden=8)
    teacher.trainable = False
    model = distill.CrossEntropyStudent(student=teacher)
    model.compile()
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 8, 8, 3)), rng.integers(0, 3, 6)
    logs = model.evaluate(x, y, batch_size=3, return_dict=True, verbose=0)
    expected = np.mean(np.argmax(teacher(x.astype("float32")).numpy(), -1) == y)
    assert logs["accuracy"] == pytest.approx(expected)


# -- a Keras user's calls: keras.distillation.Distiller's order, logits checked --------------------

def user_net(seed, units=3, activation=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Flatten(),
                             keras.layers.Dense(5, activation="tanh"),
                             keras.layers.Dense(units, activation=activation)])


@pytest.mark.parametrize("method", ["distill", "sobolev", "great", "baseline"])
def test_teacher_first_as_in_keras_is_the_teacher(method):
    teacher, student, disc = user_net(0), user_net(1), user_net(2, units=1)
    model = distill.method_class(method)(teacher, student, *([disc] if method == "great" else []))
    assert model.student is student and model.teacher is teacher
    assert teacher.trainable is False and student.trainable_variables


@pytest.mark.parametrize("call", ["positional", "keywords"])
def test_a_keras_order_call_trains_the_student_and_leaves_the_teacher_frozen(call):
    x, y = tiny_data(n=8)
    teacher, student = user_net(0), user_net(1)
    if call == "positional":
        model = distill.HintonDistiller(teacher, student, 0.5, 2.0)
    else:
        model = distill.HintonDistiller(student=student, teacher=teacher, alpha=0.5, temperature=2.0)
    teacher_before = [w.numpy().copy() for w in teacher.weights]
    student_before = [w.numpy().copy() for w in student.weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for before, w in zip(teacher_before, teacher.weights, strict=True):
        np.testing.assert_array_equal(before, w.numpy())
    assert all(not np.array_equal(before, w.numpy())
               for before, w in zip(student_before, student.weights, strict=True))


def test_a_distiller_needs_a_student_and_two_networks():
    with pytest.raises(distill.GreatError,
                       match=r"got no student: pass CrossEntropyStudent\(teacher, student"):
        distill.CrossEntropyStudent(user_net(0))  # the student alone, in the old order
    net = user_net(0)
    with pytest.raises(distill.GreatError, match="same network as teacher and student"):
        distill.HintonDistiller(net, net)


class SoftmaxNet(keras.Model):
    """A subclassed teacher whose call ends in a softmax: no last layer to read."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x, training=False):
        return tf.nn.softmax(self.dense(keras.ops.reshape(x, (-1, 72))))


def functional_softmax_teacher():
    inputs = keras.Input((6, 6, 2))
    return keras.Model(inputs, keras.layers.Lambda(keras.ops.softmax)(user_net(0)(inputs)))


@pytest.mark.parametrize("build, message", [
    (lambda: distill.HintonDistiller(user_net(0, activation="softmax"), user_net(1)),
     r"the teacher \(\w+\) ends in a softmax: great_tf's losses need logits"),
    (lambda: distill.HintonDistiller(functional_softmax_teacher(), user_net(1)),
     r"the teacher \(\w+\) outputs probabilities \(every row sums to 1\)"),
    (lambda: distill.SobolevStudent(user_net(0), user_net(1, activation="sigmoid")),
     r"the student \(\w+\) ends in a sigmoid"),
    (lambda: distill.GreatDistiller(user_net(0), user_net(1), user_net(2, 1, "sigmoid")),
     r"the discriminator \(\w+\) ends in a sigmoid"),
    (lambda: distill.GreatDistiller(user_net(0), user_net(1), user_net(2, units=2)),
     r"the discriminator \(\w+\) outputs shape \(2,\) per example: it needs one output unit"),
])
def test_probability_outputs_and_a_wide_discriminator_are_refused_in_one_line(build, message):
    with pytest.raises(distill.GreatError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


def test_a_subclassed_probability_teacher_is_probed_on_the_students_input_shape():
    with pytest.raises(distill.GreatError, match=r"the teacher \(\w+\) outputs probabilities"):
        distill.HintonDistiller(SoftmaxNet(), user_net(1))


def test_a_subclassed_discriminator_with_two_units_is_refused_at_the_first_step():
    """No output shape before it is called: the first step's trace (Python) checks it."""

    class TwoUnits(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x, training=False):
            return self.dense(keras.ops.reshape(x, (-1, 72)))

    x, y = tiny_data(n=4)
    model = distill.GreatDistiller(user_net(0), user_net(1), TwoUnits())
    model.compile()
    with pytest.raises(distill.GreatError, match="outputs shape .2,. per example: it needs one"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)


# -- a Keras user's distiller: schedules, compile, the student's BatchNorm -------------------------

def student_with(normalization, name="student"):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 2))
    x = normalization()(keras.layers.Conv2D(2, 3, padding="same")(inputs))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(3)(x), name=name)


def test_a_distiller_compiled_without_a_schedule_trains_at_a_constant_rate():
    from great_tf.schedules import learning_rate_schedule

    model = distill.compile_distiller(distill.CrossEntropyStudent(student=dense_net(0)))
    assert learning_rate_schedule(model.optimizer) is None
    x, y = tiny_data()
    before = [v.numpy().copy() for v in model.student.trainable_variables]
    model.fit(x, y, batch_size=2, epochs=2, verbose=0)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, model.student.trainable_variables))


def test_keras_loss_and_metrics_are_refused_by_a_distiller():
    model = distill.CrossEntropyStudent(student=dense_net(0))
    with pytest.raises(distill.GreatError, match="does not use loss, metrics: the loss is the objective's"):
        model.compile(optimizer="adam", loss="mse", metrics=["accuracy"])


def test_a_student_with_keras_batch_norm_is_refused_where_its_input_gradient_is_trained():
    from great_tf.models import ExactBatchNorm

    teacher, keras_bn = dense_net(2), student_with(keras.layers.BatchNormalization)
    disc = cnn5_discriminator((6, 6, 2), width=2, hidden=4)
    for method in ("sobolev", "great"):
        with pytest.raises(distill.GreatError, match="the student 'student' has keras.layers.BatchNormalization"):
            distill.build_distiller(method, student=keras_bn, teacher=teacher, discriminator=disc)
    distill.build_distiller("distill", student=keras_bn, teacher=teacher)  # first order only: accepted
    distill.build_distiller("sobolev", student=student_with(ExactBatchNorm), teacher=teacher)


@pytest.mark.parametrize("bias", [1.5, -0.5])
def test_discriminator_accuracy_is_in_percent_like_every_accuracy_the_library_returns(bias):
    x, y = tiny_data(n=4)
    model = distill.GreatDistiller(student=tiny_cnn5(1), teacher=tiny_cnn5(2),
                                   discriminator=constant_discriminator((6, 6, 2), bias))
    on_teacher, on_student = model.discriminator_accuracy(x, y)
    assert (float(on_teacher), float(on_student)) == ((100.0, 0.0) if bias > 0 else (0.0, 100.0))
