"""Gemma 3 (text): Gemma 2's sandwich norms; the multimodal wrapper is refused.

`h = x + post_attention_layernorm(self_attn(input_layernorm(x)))`, then
`out = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))`.

`gemma3_text` checkpoints (1B, 270M) load as `Gemma3TextModel`. The multimodal `gemma3`
checkpoints (4B and up) are refused: their config has no top-level text geometry and their
base model is a vision-language wrapper; their language model is the same text model, which can
be saved on its own.
"""

from generator.architectures import Architecture, Refusal

FAMILY = Architecture(
    name="gemma3",
    model_types=("gemma3_text", "gemma3"),
    attn_post_norm="post_attention_layernorm",
    norm_mlp="pre_feedforward_layernorm",
    mlp_post_norm="post_feedforward_layernorm",
    embed_scale="× sqrt(hidden_size), inside `embed_tokens`",
    refusals=(
        Refusal("model_type `gemma3` (the multimodal Gemma3ForConditionalGeneration)",
                lambda c: getattr(c, "model_type", None) == "gemma3",
                "this is the vision-language wrapper; the atlas reads text-only decoders",
                "save its language model as a text model and point `path` at it: "
                "`m = AutoModel.from_pretrained(ID); m.language_model.save_pretrained(DIR); "
                "AutoTokenizer.from_pretrained(ID).save_pretrained(DIR)` (model_type "
                "`gemma3_text`), or use a text checkpoint such as google/gemma-3-1b-pt"),
    ),
    examples=("google/gemma-3-1b-pt", "google/gemma-3-270m"),
)
