"""Model surgery for adaptation: grow the output layer, choose what trains, copy weights.

Every speechkd model ends in its CTC output layer ``ctc_lin``
(``nn.Linear(hidden, n_tokens)``), so these work on any of them.
"""

import torch


def extend_output_layer(model, n_tokens):
    """Grow the model's CTC output layer (``ctc_lin``) to ``n_tokens`` rows, keeping the old rows.

    Parameters
    ----------
    model : speechkd.models.AcousticModel
        Any speechkd model (its output layer is ``model.ctc_lin``, ``(V, hidden)``).
    n_tokens : int
        New vocabulary size, at least the current one.

    Returns
    -------
    speechkd.models.AcousticModel
        The same model; rows ``[0, V)`` of the new layer equal the old layer's,
        new rows get the layer's default initialisation.
    """
    old = model.ctc_lin
    if n_tokens < old.out_features:
        raise ValueError(f"cannot shrink the output layer from {old.out_features} to {n_tokens} tokens")
    if n_tokens == old.out_features:
        return model
    new = torch.nn.Linear(old.in_features, n_tokens, bias=old.bias is not None).to(old.weight.device)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        if old.bias is not None:
            new.bias[: old.out_features] = old.bias
    model.ctc_lin = new
    model.n_tokens = n_tokens
    return model


def freeze_for_adaptation(model, adapt_layers):
    """``all``: every parameter trains; ``output``: only the output layer (``ctc_lin``)."""
    if adapt_layers not in ("all", "output"):
        raise ValueError(f"adapt_layers must be 'all' or 'output', got {adapt_layers!r}")
    for name, param in model.named_parameters():
        param.requires_grad = adapt_layers == "all" or name.startswith("ctc_lin.")
    return model


def init_from(model, source, setting="init_from_source", off="False"):
    """Copy a same-architecture source model's weights (and normalizer) into ``model`` (Li et al. 2017).

    Parameters
    ----------
    model, source : speechkd.models.AcousticModel
        Same class, sizes and output layer.
    setting, off : str
        The YAML key that asked for it and its value that turns it off, named in the error.

    Raises
    ------
    ValueError
        When the two models differ in architecture or size, saying what to do.
    """
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as err:
        raise ValueError(f"{setting} needs a student of the source's architecture and "
                         f"size (use {setting}: {off} "
                         f"for another student): {err}") from err
    return model
