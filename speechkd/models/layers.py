"""Recording a model's named intermediate layers during its ``forward``.

Representation and relational distillation terms read the student's (and an
online teacher's) intermediate layers. A model declares them
(:meth:`speechkd.models.base.AcousticModel.layer_taps`); :class:`LayerRecorder`
hooks them for the duration of a ``with`` block, so the forward pass still
runs through ``model.forward`` (and SpeechBrain's DDP wrapper) unchanged.
"""

from __future__ import annotations

import torch


def _as_time_major(value, layout: str) -> torch.Tensor:
    if isinstance(value, tuple):
        value = value[0]
    if layout == "output_channels_first":
        value = value.transpose(1, 2)
    return value


class LayerRecorder:
    """Context manager: ``states[name]`` is the ``(batch, time, dim)`` value of each named layer.

    Parameters
    ----------
    model : speechkd.models.AcousticModel
        The bare model (hooks fire also when a DDP wrapper calls it).
    names : iterable of str
        Layers to record; each must be one of ``model.layer_taps()``.

    Raises
    ------
    ValueError
        On a name the model does not declare (the message lists those it has).

    Example
    -------
    >>> from speechkd.models import StreamingStudent
    >>> model = StreamingStudent(n_tokens=5, gru_hidden=8)
    >>> with LayerRecorder(model, ["encoder"]) as recorder:
    ...     _ = model(torch.zeros(1, 3200), torch.ones(1))
    >>> recorder.states["encoder"].shape
    torch.Size([1, 10, 8])
    """

    def __init__(self, model, names):
        taps = model.layer_taps()
        unknown = sorted(set(names) - set(taps))
        if unknown:
            raise ValueError(f"{type(model).__name__} has no layers {unknown}; it has {sorted(taps)}")
        self.taps = {name: taps[name] for name in names}
        self.states = {}
        self._handles = []

    def __enter__(self):
        self.states = {}
        for name, (module, layout) in self.taps.items():
            if layout == "input":
                def hook(_module, args, name=name):
                    self.states[name] = args[0]
                self._handles.append(module.register_forward_pre_hook(hook))
            else:
                def hook(_module, _args, output, name=name, layout=layout):
                    self.states[name] = _as_time_major(output, layout)
                self._handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False
