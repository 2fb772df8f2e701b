"""Run an exported spellfix model with ONNX Runtime: tokenize, encode, decode with a KV cache.

This file is deliberately self-contained (numpy, onnxruntime and tokenizers only, plus the
standard library): the Triton python-backend model copies it next to its ``model.py`` and
imports it inside the server, where neither torch nor spellfix is installed. Everything it
needs (graph names, special token ids, generation settings) comes from the ``manifest.json``
that ``spellfix.export.onnx`` writes beside the graphs.

The graphs (see ``spellfix.export.onnx``):
- encoder: ``input_ids``, ``attention_mask`` -> ``encoder_hidden_states`` and, per decoder
  layer, the cross-attention keys/values, so they are computed once per query;
- decoder: the new token(s), ``encoder_attention_mask``, the self-attention past (length 0 on
  the first step, so no ``If`` node is needed) and the cross keys/values -> ``logits`` and
  the grown self-attention keys/values.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

try:
    from spellfix.decoding import max_new_tokens_for
except ImportError:  # inside the Triton python backend, decoding.py sits next to this file
    from decoding import max_new_tokens_for

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
# ONNX element type names as ORT reports them, mapped to the numpy dtype we feed.
_ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def load_manifest(export_dir: str | Path) -> dict:
    """Read ``manifest.json``; a directory without one is not an export, so say how to make one."""
    path = Path(export_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {export_dir} is not an ONNX export; create one with "
            f"`spellfix-export model=<model dir> output_dir=<dir>`"
        )
    return json.loads(path.read_text())


CPU_SCORE_BATCH_SIZE = 64  # (source, target) pairs per scoring call on the host


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class OrtSeq2Seq:
    """An exported encoder/decoder pair plus its tokenizer, correcting batches of queries.

    ``providers`` is the ONNX Runtime execution-provider list (CPU by default); with the CUDA
    provider the KV cache stays on the GPU between steps through I/O binding.
    ``graph_optimization_level`` is one of disable/basic/extended/all (ORT's own default is
    ``all``; ``experiments/bench_inference.py`` measures what it buys).
    """

    def __init__(
        self,
        export_dir: str | Path,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
        num_beams: int = 1,
        max_new_tokens_ratio: float | None = None,
        batch_size: int = 64,
        graph_optimization_level: str = "all",
    ) -> None:
        self._load_manifest_and_tokenizer(export_dir, num_beams, max_new_tokens_ratio, batch_size)
        options = ort.SessionOptions()
        options.graph_optimization_level = _OPTIMIZATION_LEVELS[graph_optimization_level]
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3  # ORT warns about every unused initializer otherwise
        providers = providers or ["CPUExecutionProvider"]
        graphs = self.manifest["graphs"]
        self.encoder = ort.InferenceSession(
            str(self.export_dir / graphs["encoder"]["file"]), options, providers=providers
        )
        self.decoder = ort.InferenceSession(
            str(self.export_dir / graphs["decoder"]["file"]), options, providers=providers
        )
        self.on_cuda = "CUDAExecutionProvider" in self.decoder.get_providers()
        # On the host, finished rows are cheap to drop from the cache; on CUDA the cache
        # stays on the device as OrtValues, which ORT cannot index.
        self.compacts_finished_rows = not self.on_cuda
        if not self.on_cuda:
            # Teacher-forced scoring on the host is fastest in small chunks: 640 queries
            # of lexicon decoding took 1.3-1.5 s in chunks of 64 pairs against 1.8-1.9 s
            # in chunks of 256 (2 cores), the attention tensors then staying in cache.
            self.score_batch_size = CPU_SCORE_BATCH_SIZE
        past_type = next(i.type for i in self.decoder.get_inputs() if i.name == self.kv["past"][0])
        self.cache_dtype = _ORT_TO_NUMPY[past_type]

    def _load_manifest_and_tokenizer(
        self,
        export_dir: str | Path,
        num_beams: int,
        max_new_tokens_ratio: float | None,
        batch_size: int,
    ) -> None:
        """Everything but the sessions; the TensorRT runner shares it."""
        self.export_dir = Path(export_dir)
        self.manifest = load_manifest(self.export_dir)
        self.generation = dict(self.manifest["generation"])
        if max_new_tokens_ratio is not None:
            self.generation["max_new_tokens_ratio"] = max_new_tokens_ratio
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        self.num_beams = num_beams
        self.batch_size = batch_size
        self.score_batch_size = 8 * batch_size
        self.kv = self.manifest["kv_cache"]
        self.tokenizer = Tokenizer.from_file(str(self.export_dir / self.manifest["tokenizer"]))
        self.tokenizer.no_padding()
        self.max_input_tokens = self.generation["max_input_tokens"]
        self.tokenizer.enable_truncation(self.max_input_tokens)

    # ------------------------------------------------------------------ text in, text out
    def correct(self, texts: list[str]) -> list[str]:
        """Generated corrections; blank and over-long inputs come back unchanged.

        Queries are sorted by token length and batched with others of the same generation
        budget, so little compute goes to padding and a query's output never depends on
        what else is in its batch.
        """
        results = list(texts)
        todo = [i for i, text in enumerate(texts) if text.strip()]
        encodings = self.tokenizer.encode_batch([texts[i] for i in todo])
        too_long = [texts[i] for i, enc in zip(todo, encodings, strict=True) if enc.overflowing]
        if too_long:
            logger.warning(
                "%d input(s) longer than %d tokens left as they are (first: %.60r)",
                len(too_long),
                self.max_input_tokens,
                too_long[0],
            )
        groups: dict[int, list[int]] = {}
        for k in sorted(range(len(todo)), key=lambda k: len(encodings[k].ids)):
            if not encodings[k].overflowing:
                groups.setdefault(self._budget(len(encodings[k].ids)), []).append(k)
        for budget, members in groups.items():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                input_ids, attention_mask = self.pad([encodings[k].ids for k in chunk])
                generated = self.generate(input_ids, attention_mask, max_new_tokens=budget)
                for k, text in zip(chunk, self.decode(generated), strict=True):
                    results[todo[k]] = text
        return results

    def _budget(self, input_length: int) -> int:
        return max_new_tokens_for(
            input_length,
            self.generation["max_new_tokens_ratio"],
            self.generation["min_new_tokens_budget"],
            self.generation["max_decoder_positions"],
        )

    def pad(self, sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad token id lists into ``input_ids`` and ``attention_mask`` (int64)."""
        width = max(len(ids) for ids in sequences)
        input_ids = np.full((len(sequences), width), self.generation["pad_token_id"], np.int64)
        attention_mask = np.zeros((len(sequences), width), np.int64)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    def score(self, sources: list[str], targets: list[str]) -> np.ndarray:
        """log P(target | source) under the model, summed over the target's tokens.

        Teacher forcing through the same two graphs as generation: the decoder gets the
        whole shifted target at once with an empty past. Pairs are sorted by length and
        batched by ``score_batch_size``, so padding stays small.
        """
        if not sources:
            return np.zeros(0, np.float64)
        # A typed word is the target of every one of its candidates: tokenize each text once.
        texts = list(dict.fromkeys([*sources, *targets]))
        ids = dict(zip(texts, (e.ids for e in self.tokenizer.encode_batch(texts)), strict=True))
        source_ids = [ids[text] for text in sources]
        target_ids = [ids[text] for text in targets]
        order = sorted(range(len(sources)), key=lambda i: (len(source_ids[i]), len(target_ids[i])))
        scores = np.zeros(len(sources), np.float64)
        start_token, pad = (
            self.generation["decoder_start_token_id"],
            self.generation["pad_token_id"],
        )
        for begin in range(0, len(order), self.score_batch_size):
            chunk = order[begin : begin + self.score_batch_size]
            input_ids, attention_mask = self.pad([source_ids[i] for i in chunk])
            labels, label_mask = self.pad([target_ids[i] for i in chunk])
            decoder_input = np.concatenate(
                [np.full((len(chunk), 1), start_token, np.int64), labels[:, :-1]], axis=1
            )
            decoder_input[:, 1:][label_mask[:, :-1] == 0] = pad
            cross = self._encode(input_ids, attention_mask)
            logits = self._all_logits(decoder_input, attention_mask, cross)
            picked = np.take_along_axis(_log_softmax(logits), labels[:, :, None], axis=2)[..., 0]
            scores[chunk] = (picked * label_mask).sum(axis=1)
        return scores

    def _all_logits(self, decoder_input: np.ndarray, encoder_mask: np.ndarray, cross) -> np.ndarray:
        """Decoder logits at every position of ``decoder_input`` (no cache)."""
        feeds = {"decoder_input_ids": decoder_input, "encoder_attention_mask": encoder_mask}
        feeds.update(zip(self.kv["past"], self._empty_past(len(decoder_input)), strict=True))
        feeds.update(zip(self.kv["cross"], [self._host(c) for c in cross], strict=True))
        return self.decoder.run(["logits"], feeds)[0].astype(np.float32)

    def decode(self, generated: np.ndarray) -> list[str]:
        """Token ids (as ``generate`` returns them) to text, without specials or prefix space."""
        texts = self.tokenizer.decode_batch(generated.tolist(), skip_special_tokens=True)
        return [text.strip() for text in texts]

    # ------------------------------------------------------------------ ids in, ids out
    def generate(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> np.ndarray:
        """Generate for a padded batch; returns ``(batch, 1 + steps)`` ids starting with the
        decoder start token and padded with ``pad_token_id`` after each row's EOS, the same
        layout as ``transformers`` ``generate`` so the two can be compared directly."""
        input_ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        attention_mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        if max_new_tokens is None:
            max_new_tokens = self._budget(int(attention_mask.sum(axis=1).max()))
        cross = self._encode(input_ids, attention_mask)
        beams = num_beams or self.num_beams
        if beams == 1:
            return self._greedy(attention_mask, cross, max_new_tokens)
        return self._beam_search(attention_mask, cross, max_new_tokens, beams)

    def _encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list:
        """Run the encoder; returns the cross-attention keys/values, in decoder input order."""
        outputs = self.encoder.run(
            self.kv["cross_outputs"], {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        return list(outputs)

    def _take(self, values: list, rows: np.ndarray) -> list:
        """Select batch rows of cache tensors (drop finished rows, reorder beams)."""
        return [self._host(value)[rows] for value in values]

    @staticmethod
    def _host(value) -> np.ndarray:
        return value.numpy() if isinstance(value, ort.OrtValue) else value

    def _constrain(self, logits: np.ndarray, step: int, max_new_tokens: int) -> np.ndarray:
        """Apply the forced first/last tokens of the model's generation config, as HF does."""
        forced = None
        if step == 0 and self.generation.get("forced_bos_token_id") is not None:
            forced = self.generation["forced_bos_token_id"]
        elif step == max_new_tokens - 1 and self.generation.get("forced_eos_token_id") is not None:
            forced = self.generation["forced_eos_token_id"]
        if forced is None:
            return logits
        constrained = np.full_like(logits, -np.inf)
        constrained[:, forced] = 0.0
        return constrained

    def _empty_past(self, rows: int) -> list[np.ndarray]:
        shape = (rows, self.kv["num_heads"], 0, self.kv["head_dim"])
        return [np.zeros(shape, self.cache_dtype) for _ in self.kv["past"]]

    def _step(self, tokens, encoder_mask, past, cross):
        """One decoder call; returns last-position logits (float32, host) and the new cache.

        On CUDA the cache tensors stay on the device as ``OrtValue`` objects (I/O binding);
        only the logits come back to the host for the token choice.
        """
        feeds_host = {"decoder_input_ids": tokens, "encoder_attention_mask": encoder_mask}
        if not self.on_cuda:
            feeds = dict(feeds_host)
            feeds.update(zip(self.kv["past"], past, strict=True))
            feeds.update(zip(self.kv["cross"], cross, strict=True))
            outputs = self.decoder.run(["logits", *self.kv["present"]], feeds)
            return outputs[0][:, -1, :].astype(np.float32), outputs[1:]
        binding = self.decoder.io_binding()
        for name, value in feeds_host.items():
            binding.bind_cpu_input(name, value)
        for name, value in zip([*self.kv["past"], *self.kv["cross"]], [*past, *cross], strict=True):
            if isinstance(value, np.ndarray):
                value = ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0)
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self.kv["present"]:
            binding.bind_output(name, "cuda", 0)
        self.decoder.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return outputs[0].numpy()[:, -1, :].astype(np.float32), list(outputs[1:])

    def _greedy(self, encoder_mask, cross, max_new_tokens: int) -> np.ndarray:
        """Greedy decoding with early stop per sequence.

        On CPU, finished rows leave the batch (their cache rows are dropped), so a batch costs
        what its unfinished rows cost. On CUDA the cache lives on the device and is not
        re-indexed; finished rows keep running (cheap there) and emit padding.
        """
        rows = encoder_mask.shape[0]
        start, eos, pad = (
            self.generation[k] for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id")
        )
        output = np.full((rows, 1 + max_new_tokens), pad, np.int64)
        output[:, 0] = start
        active = np.arange(rows)
        tokens = np.full((rows, 1), start, np.int64)
        past = self._empty_past(rows)
        finished = np.zeros(rows, bool)
        steps = 0
        for step in range(max_new_tokens):
            logits, past = self._step(tokens, encoder_mask, past, cross)
            next_tokens = self._constrain(logits, step, max_new_tokens).argmax(axis=-1)
            next_tokens = np.where(finished[active], pad, next_tokens)
            output[active, step + 1] = next_tokens
            finished[active] |= next_tokens == eos
            steps = step + 1
            if finished.all():
                break
            keep = ~finished[active]
            if self.compacts_finished_rows and not keep.all():
                active = active[keep]
                encoder_mask = encoder_mask[keep]
                past = self._take(past, keep)
                cross = self._take(cross, keep)
                next_tokens = next_tokens[keep]
            tokens = next_tokens[:, None].astype(np.int64)
        return output[:, : 1 + steps]

    def _beam_search(self, encoder_mask, cross, max_new_tokens: int, num_beams: int) -> np.ndarray:
        """Beam search (length penalty 1.0, a row stops once it holds ``num_beams`` finished
        hypotheses, as ``early_stopping=True`` in transformers); returns the best hypothesis.

        The cache is re-ordered through ``_take`` each step; with ORT on CUDA that copies it
        through the host, so greedy is the serving default there.
        """
        rows, width = encoder_mask.shape[0], num_beams
        start, eos, pad = (
            self.generation[k] for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id")
        )
        expand = np.repeat(np.arange(rows), width)
        encoder_mask = encoder_mask[expand]
        cross = self._take(cross, expand)
        past = self._empty_past(rows * width)
        sequences = np.full((rows * width, 1), start, np.int64)
        # Only the first beam of each row is live at the start; the others are copies.
        scores = np.full((rows, width), -1e9, np.float32)
        scores[:, 0] = 0.0
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(rows)]
        done = np.zeros(rows, bool)
        for step in range(max_new_tokens):
            logits, past = self._step(sequences[:, -1:], encoder_mask, past, cross)
            logprobs = _log_softmax(self._constrain(logits, step, max_new_tokens))
            vocab = logprobs.shape[-1]
            candidates = (scores.reshape(-1, 1) + logprobs).reshape(rows, width * vocab)
            top = np.argsort(-candidates, axis=1, kind="stable")[:, : 2 * width]
            next_beam = np.zeros((rows, width), np.int64)
            next_token = np.full((rows, width), pad, np.int64)
            next_score = np.full((rows, width), -1e9, np.float32)
            for row in range(rows):
                if done[row]:
                    next_beam[row] = np.arange(width)
                    continue
                kept = 0
                for rank, flat in enumerate(top[row]):
                    beam, token = divmod(int(flat), vocab)
                    score = float(candidates[row, flat])
                    if token == eos:
                        if rank < width:
                            hypothesis = [*sequences[row * width + beam].tolist(), eos]
                            finished[row].append((score / (step + 1), hypothesis))
                        continue
                    next_beam[row, kept], next_token[row, kept] = beam, token
                    next_score[row, kept] = score
                    kept += 1
                    if kept == width:
                        break
                done[row] = len(finished[row]) >= width
            if done.all():
                break
            source = (np.arange(rows)[:, None] * width + next_beam).reshape(-1)
            sequences = np.concatenate([sequences[source], next_token.reshape(-1, 1)], axis=1)
            past = self._take(past, source)
            scores = next_score
        for row in range(rows):
            if not done[row]:
                for beam in range(width):
                    length = sequences.shape[1] - 1
                    hypothesis = sequences[row * width + beam].tolist()
                    finished[row].append((float(scores[row, beam]) / max(length, 1), hypothesis))
        best = [max(hyps, key=lambda h: h[0])[1] for hyps in finished]
        output = np.full((rows, max(len(b) for b in best)), pad, np.int64)
        for row, hypothesis in enumerate(best):
            output[row, : len(hypothesis)] = hypothesis
        return output
