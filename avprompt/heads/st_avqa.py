"""ST-AVQA-style head for audio-visual question answering (Li et al., CVPR 2022, "Learning to Answer
Questions in Dynamic Audio-Visual Scenarios"; facts from ../shared/reference/METHODS.md, "AVQA on
MUSIC-AVQA").

Inputs (a batch of B_v videos and their B_q questions, ``avprompt.supervised.sources.avqa``):
    f_v (B_v, T, D_v), f_a (B_v, T, D_a)   per-segment embeddings of the encoder mode
    batch["tokens_v"][-1] (B_v, T, L, C)   the last vision block's tokens (CLS first, then P patches)
    batch["question"] (B_q, L_q) word ids (0 = padding), batch["question_len"] (B_q,),
    batch["question_video"] (B_q,) the row of each question's video, batch["answer"] (B_q,)
As ST-AVQA:
    question encoder   word embedding -> tanh -> LSTM -> [h; c] -> tanh -> Linear: q (B_q, d)
    spatial grounding  per segment, the audio vector attends over the P patch tokens (cosine
                       similarity, softmax over patches): a sounding-region vector, fused with the
                       segment's pooled visual embedding -> v (B_v, T, d)
    temporal grounding per question, q attends (multi-head) over its video's T audio segments and
                       T grounded visual segments; residual feed-forward + layer norm, plus the
                       segment means, as ST-AVQA adds them
    fusion             tanh([a_att; v_att]) -> Linear -> times q -> tanh -> Linear over C answers
Loss: cross-entropy on ``answer``; predict: ``answer_scores`` = softmax (B_q, C).

Simplified from ST-AVQA: the features are the shared towers' (CLIP-style patch tokens and the CLAP
per-second embedding, not ResNet-18 maps and VGGish); no audio-visual matching loss on shuffled
negative pairs (ST-AVQA's auxiliary grounding supervision); one temporal-attention layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from avprompt.heads import Head, HeadConfig, projection, register_head


@dataclass
class STAVQAConfig(HeadConfig):
    """batch_size counts VIDEOS (each with all its questions). Defaults sized so ``avprompt train
    --task avqa`` (frozen encoder, SynthAV small) fits in ~10 minutes on 2 CPU cores."""

    batch_size: int = 8
    epochs: int = 30
    lr: float = 1e-3
    hidden: int = 128  # d: question, audio and visual vectors
    word_dim: int = 64  # word embedding width
    heads: int = 4  # attention heads of the temporal grounding
    temperature: float = 10.0  # scale of the cosine logits of the spatial grounding


class _TemporalGrounding(nn.Module):
    """q (B_q, d) attends over x (B_q, T, d); residual feed-forward + layer norm (ST-AVQA's block)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads if d % heads == 0 else 1, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.drop, self.norm = nn.Dropout(dropout), nn.LayerNorm(d)

    def forward(self, q, x):
        att = self.attn(q.unsqueeze(1), x, x, need_weights=False)[0].squeeze(1)  # (B_q, d)
        return self.norm(att + self.drop(self.ff(att)))


@register_head("st-avqa")
class STAVQAHead(Head):
    config_class = STAVQAConfig
    tasks = ("avqa",)
    description = "ST-AVQA-style AVQA: question LSTM, audio-guided spatial and question-guided temporal grounding"
    needs_tokens = True

    def __init__(self, dims, num_classes, config: STAVQAConfig, context=None):
        super().__init__(dims, num_classes, config, context)
        d, p = config.hidden, config.dropout
        vocab = int(self.context.get("vocab_size", 0))
        if vocab < 3:
            raise ValueError("head st-avqa needs context['vocab_size'] (question words); run it on task avqa")
        self.embed = nn.Embedding(vocab, config.word_dim, padding_idx=0)
        self.lstm = nn.LSTM(config.word_dim, d, batch_first=True)
        self.q_out = nn.Linear(2 * d, d)
        self.proj_a, self.proj_v = projection(dims[1], d, p), projection(dims[0], d, p)
        self.proj_tok = nn.Linear(int(self.context["vision_width"]), d)
        self.ground = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Dropout(p))
        self.t_audio = _TemporalGrounding(d, config.heads, p)
        self.t_visual = _TemporalGrounding(d, config.heads, p)
        self.fusion = nn.Linear(2 * d, d)
        self.drop = nn.Dropout(p)
        self.classify = nn.Linear(d, num_classes)

    @classmethod
    def example_batch(cls, B, T, C, context, generator):
        """B questions, one per video (B_q = B_v = B), 6 word slots, the last ones padded."""
        L = 6
        q = torch.randint(2, int(context["vocab_size"]), (B, L), generator=generator)
        lengths = torch.randint(3, L + 1, (B,), generator=generator)
        q[torch.arange(L).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
        return {"question": q, "question_len": lengths, "question_video": torch.arange(B),
                "answer": torch.randint(0, C, (B,), generator=generator)}

    def encode_question(self, words, lengths):
        """(B_q, L_q) ids, (B_q,) lengths -> q (B_q, d)."""
        x = torch.tanh(self.embed(words))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, (h, c) = self.lstm(packed)
        return self.q_out(torch.tanh(torch.cat([h[-1], c[-1]], -1)))

    def forward(self, f_v, f_a, batch=None):
        a = self.proj_a(f_a.float())  # (B_v, T, d)
        v_pool = self.proj_v(f_v.float())  # (B_v, T, d)
        patches = self.proj_tok(batch["tokens_v"][-1][:, :, 1:].float())  # (B_v, T, P, d), CLS dropped
        # audio-guided spatial grounding: where in the frame the segment's sound is
        sim = torch.einsum("btd,btpd->btp", F.normalize(a, dim=-1), F.normalize(patches, dim=-1))
        w = torch.softmax(self.config.temperature * sim, dim=-1)
        grounded = torch.einsum("btp,btpd->btd", w, patches)
        v = self.ground(torch.cat([grounded, v_pool], -1))  # (B_v, T, d)
        q = self.encode_question(batch["question"], batch["question_len"])  # (B_q, d)
        # question-guided temporal grounding on each question's own video
        rows = batch["question_video"]
        a_q, v_q = a[rows], v[rows]  # (B_q, T, d)
        a_att = self.t_audio(q, a_q) + a_q.mean(1)
        v_att = self.t_visual(q, v_q) + v_q.mean(1)
        feat = self.fusion(torch.tanh(torch.cat([a_att, v_att], -1)))
        return {"logits": self.classify(self.drop(torch.tanh(feat * q)))}  # (B_q, C)

    def loss(self, out, batch):
        return F.cross_entropy(out["logits"].float(), batch["answer"])

    def predict(self, out):
        return {"answer_scores": torch.softmax(out["logits"].float(), -1)}
