"""MXNet-style autograd (``import pullback.autograd as ag``)."""

from pullback.runtime.autograd import (  # noqa: F401
    Function, backward, grad, is_recording, is_training, mark_variables, pause,
    predict_mode, record, set_recording, set_training, train_mode,
)
