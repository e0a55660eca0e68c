"""Config values and written-out formulas for the planner's hand-checked tests (from the bundled config.json files)."""

GIB = 1 << 30
H100_MEMORY_BYTES = 80 * GIB  # lcprof/data/gpus.json: 85899345920
H100_HBM_BYTES_PER_S = 3.35e12
H100_BF16_FLOPS_PER_S = 989.4e12
NVLINK4_BYTES_PER_S = 450e9
BF16 = 2  # bytes per element
FP8 = 1


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
