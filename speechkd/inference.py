"""Running trained models: posteriors over a dataset, transcription."""

import speechbrain as sb
import torch

from speechkd.data.pipelines import BadInputError, load_audio
from speechkd.decoding import LexiconDecoder, ctc_greedy, ctc_prefix_beam


@torch.no_grad()
def iterate_posteriors(model, dataset, batch_size=16, device="cpu", signal="sig"):
    """Run ``model`` over a dataset, one batch at a time.

    Parameters
    ----------
    model : speechkd.models.AcousticModel
    dataset : DynamicItemDataset
        Provides ``id``, ``wrd``, ``lang``, ``domain`` and ``signal``.
    batch_size : int
    device : str
    signal : str
        Which audio item to feed (``sig``, or ``sig_parallel`` for the other
        half of a parallel pair).

    Yields
    ------
    batch : PaddedBatch
    log_probs : torch.Tensor
        ``(batch, frames, vocab)`` on the CPU.
    frames : torch.Tensor
        ``(batch,)`` number of valid output frames of each utterance.
    """
    model = model.to(device).eval()
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=batch_size)
    for batch in loader:
        wavs, wav_lens = getattr(batch, signal)
        log_probs = model(wavs.to(device), wav_lens.to(device)).cpu()
        frames = model.output_lengths(wav_lens, wavs.shape[1])
        yield batch, log_probs, frames


@torch.no_grad()
def transcribe_files(model_folder, paths, beam=0, device="cpu", resample=False, lexicon=None,
                     lm_weight=0.5, word_score=0.0):
    """Transcribe audio files with a trained model.

    Parameters
    ----------
    model_folder : str
        Experiment folder of a speechkd recipe.
    paths : list of str
        Mono audio files at the model's rate (16 kHz).
    beam : int
        Prefix beam width; 0 decodes greedily.
    resample : bool
        Resample files at another rate instead of refusing them
        (:func:`speechkd.data.pipelines.load_audio`, the training pipeline's reader).
    lexicon : str, optional
        A manifest (the model's ``train.csv``) whose transcripts give the words and
        bigram LM of a :class:`~speechkd.decoding.LexiconDecoder` (not with ``beam``).
    lm_weight, word_score : float
        The lexicon decoder's LM weight and per-word score.

    Yields
    ------
    (path, text, error)
        ``text`` is None and ``error`` says why (naming the file) when a file
        cannot be used (missing, unreadable, wrong format, NaN samples); the
        other files are still transcribed.
    """
    from speechkd.experiment import load_model

    if lexicon and beam > 0:
        raise ValueError("--beam is the prefix beam search without a lexicon; --lexicon has its own beam: "
                         "give one of them")
    model, inventory = load_model(model_folder, device=device)
    lexicon_decoder = (LexiconDecoder.from_manifest(inventory, lexicon, lm_weight=lm_weight,
                                                    word_score=word_score) if lexicon else None)
    for path in paths:
        try:
            wav = load_audio(path, model.sample_rate, resample=resample).unsqueeze(0).to(device)
        except BadInputError as err:
            yield path, None, str(err)
            continue
        log_probs = model(wav, torch.ones(1, device=device))[0].cpu()
        if lexicon_decoder is not None:
            yield path, lexicon_decoder(log_probs.unsqueeze(0), torch.tensor([log_probs.shape[0]]))[0], None
            continue
        if beam > 0:
            ids = ctc_prefix_beam(log_probs.numpy(), beam=beam)
        else:
            ids = ctc_greedy(log_probs.unsqueeze(0), torch.tensor([log_probs.shape[0]]))[0]
        yield path, inventory.decode(ids), None
