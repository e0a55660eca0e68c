"""Config values and written-out formulas for the planner's hand-checked tests (from the bundled config.json files)."""

GIB = 1 << 30
MIB = 1 << 20
H100_MEMORY_BYTES = 80 * GIB  # lcprof/data/gpus.json: 85899345920
H100_REPORTED_BYTES = 81559 * MIB  # gpus.json reported_memory_mib (nvidia-smi total)
H200_REPORTED_BYTES = 143771 * MIB
H100_HBM_BYTES_PER_S = 3.35e12
H200_HBM_BYTES_PER_S = 4.8e12
H100_BF16_FLOPS_PER_S = 989.4e12  # H200: the same GH100 peak
H100_FP8_FLOPS_PER_S = 1978.9e12
NVLINK4_BYTES_PER_S = 450e9
BF16 = 2  # bytes per element
FP8 = 1


def cdiv(a, b):
    return -(-a // b)


def llama_params(h, inter, vocab, layers, heads, kv_heads, head_dim, tied=False):
    """Parameter count of a Llama-style model, written out from its config."""
    q = h * heads * head_dim
    kv = h * kv_heads * 2 * head_dim
    o = heads * head_dim * h
    mlp = 3 * h * inter
    norms = 2 * h
    per_layer = q + kv + o + mlp + norms
    emb = vocab * h
    head = 0 if tied else vocab * h
    return layers * per_layer + emb + head + h  # + final norm


def tiled_activation_bytes(n, h, heads, kv_heads, head_dim, inter, s=BF16, tp=1):
    """Peak activation bytes of one Llama layer's prefill of n tokens, tiled attention (lcprof's layout,
    cost.activation_steps), written out step by step per token; low precision (s < 4), full rotary:
    cos/sin tables 2*s*head_dim live throughout; input norm: x + fp32 copy, scaled, cast, output;
    attention: x, normed x, q, k, v, then RoPE temporaries (3 x the rotated tensor), the kernel's
    output + fp32 LSE, the o projection; MLP: x, x + attn, normed, act(gate), up, product.
    On one of ``tp`` ranks: heads, KV heads (at least one) and the MLP width split; hidden-size
    tensors whole."""
    heads, kv_heads, inter = heads // tp, max(kv_heads // tp, 1), inter / tp
    tables = 2 * s * head_dim
    norm = h * (2 * s + 8)
    qkv = tables + 2 * s * h + s * (heads * head_dim + 2 * kv_heads * head_dim)
    steps = [
        tables + s * h + norm,  # input norm
        qkv + 3 * s * heads * head_dim,  # RoPE on q
        qkv + s * heads * head_dim + 3 * s * kv_heads * head_dim,  # RoPE on k (q rotated, q kept)
        qkv + s * heads * head_dim + 4 * heads,  # kernel output + LSE
        qkv + s * heads * head_dim + s * h,  # o projection
        tables + 2 * s * h + norm,  # post-attention norm
        tables + 3 * s * h + 3 * s * inter,  # gated MLP
        tables + 4 * s * h,  # residual add
    ]
    return n * max(steps)


def vllm_dense_mlp_bytes_per_token(h, inter, tp=1, s=BF16):
    """vLLM's dense MLP step per token on one rank: residual h + input h + gate_up 2I/tp + SiluAndMul
    output I/tp + down output h (hidden-size tensors whole)."""
    return s * (3 * h + 3 * inter // tp)


def vllm_sampler_bytes(tokens, rows, h, vocab, s=BF16):
    """vLLM's sampler dummy run: the forward's output (tokens x h) alive, logits bf16 + fp32 + softmax
    probabilities + exponential noise over rows x vocab."""
    return tokens * h * s + min(rows, tokens) * vocab * (2 + 4 + 4 + 4)


def fp8_block_bytes(d_in, d_out):
    """An fp8 matrix with 128 x 128 block scales in fp32 (DeepSeek-V3's quantization_config)."""
    return d_in * d_out + 4 * cdiv(d_out, 128) * cdiv(d_in, 128)


# DeepSeek-V3 (lcprof/data/models/deepseek-v3.json)
DSV3 = dict(h=7168, heads=128, q_lora=1536, kv_lora=512, nope=128, rope=64, v=128, layers=61, dense_layers=3,
            inter=18432, experts=256, active=8, expert_inter=2048, shared=1, vocab=129280, yarn_positions=4096 * 40)


def dsv3_attention_fp8(tp):
    """One DeepSeek-V3 layer's attention weights on one of ``tp`` ranks, fp8 block-scaled (vLLM layout:
    q_a and kv_a replicated, q_b/kv_b/o split by heads) + the two bf16 latent norms."""
    d = DSV3
    hr = d["heads"] // tp
    f = fp8_block_bytes
    return (f(d["h"], d["q_lora"]) + f(d["q_lora"], hr * (d["nope"] + d["rope"])) + f(d["h"], d["kv_lora"] + d["rope"])
            + f(d["kv_lora"], hr * (d["nope"] + d["v"])) + f(hr * d["v"], d["h"]) + BF16 * (d["q_lora"] + d["kv_lora"]))


def dsv3_weights_fp8(tp, dp):
    """DeepSeek-V3 fp8 weights on one GPU as vLLM loads them: TP ``tp`` attention and dense layers,
    routed experts over tp x dp GPUs (whole experts when dp > 1: expert parallel; width split at dp = 1),
    bf16 router/norms/embeddings, RoPE cache (163840 x 64 bf16), bf16 W_UK/W_UV copies of kv_b."""
    d = DSV3
    f = fp8_block_bytes
    moe_layers = d["layers"] - d["dense_layers"]
    shards = tp * dp
    if dp > 1:
        experts = (d["experts"] // shards) * (f(d["h"], 2 * d["expert_inter"]) + f(d["expert_inter"], d["h"]))
    else:
        w = d["expert_inter"] // shards
        experts = d["experts"] * (f(d["h"], 2 * w) + f(w, d["h"]))
    sw = d["expert_inter"] // tp
    shared = f(d["h"], 2 * sw) + f(sw, d["h"])
    dense = f(d["h"], 2 * d["inter"] // tp) + f(d["inter"] // tp, d["h"])
    return (d["layers"] * dsv3_attention_fp8(tp) + d["dense_layers"] * dense + moe_layers * (experts + shared)
            + moe_layers * BF16 * d["h"] * d["experts"] + BF16 * (d["layers"] * 2 * d["h"] + d["h"])
            + 2 * BF16 * d["h"] * d["vocab"] // tp + d["yarn_positions"] * d["rope"] * BF16
            + d["layers"] * BF16 * d["kv_lora"] * (d["heads"] // tp) * (d["nope"] + d["v"]))


def causal_tiled_pairs(n, tile=128):
    """(query, key) pairs a tiled causal kernel executes for n a multiple of the tile: every tile on or
    below the diagonal, T (T + 1) / 2 tiles of tile^2 pairs for T = n / tile."""
    t = n // tile
    return t * (t + 1) // 2 * tile * tile
