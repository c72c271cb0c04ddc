// Q6_K, uploaded as 56 words per 256-element block: [ql: 128 bytes] [qh: 64 bytes]
// [scales: 16 × i8] [d: f16, 14 bytes of padding]. Element e = 128n + 32·quarter + l: low 4
// bits from ql[64n + l + 32·(quarter & 1)] (high nibble when quarter ≥ 2), top 2 bits from bits
// 2·quarter of qh[32n + l]; value d·scales[8n + l/16 + 2·quarter]·(q − 32).
fn nib4(q: u32, sh: u32) -> vec4<f32> {
    return vec4<f32>(f32(extractBits(q, sh, 4u)), f32(extractBits(q, 8u + sh, 4u)),
                     f32(extractBits(q, 16u + sh, 4u)), f32(extractBits(q, 24u + sh, 4u)));
}

fn two4(q: u32, sh: u32) -> vec4<f32> {
    return vec4<f32>(f32(extractBits(q, sh, 2u)), f32(extractBits(q, 8u + sh, 2u)),
                     f32(extractBits(q, 16u + sh, 2u)), f32(extractBits(q, 24u + sh, 2u)));
}

fn load8(row: u32, c: u32) -> array<vec4<f32>, 2> {
    let b = row + (c / 32u) * 56u;
    let e0 = (c % 32u) * 8u;
    let n = e0 / 128u;
    let r = e0 % 128u;
    let quarter = r / 32u;
    let l0 = r % 32u;
    let qlw = b + (64u * n + l0 + (quarter & 1u) * 32u) / 4u;
    let qhw = b + 32u + (32u * n + l0) / 4u;
    let sidx = 8u * n + l0 / 16u + 2u * quarter;
    let sc = f32(extractBits(bitcast<i32>(w[b + 48u + sidx / 4u]), (sidx % 4u) * 8u, 8u));
    let d = unpack2x16float(w[b + 52u]).x * sc;
    let nsh = (quarter >> 1u) * 4u;
    let hsh = 2u * quarter;
    let q0 = nib4(w[qlw], nsh) + two4(w[qhw], hsh) * 16.0;
    let q1 = nib4(w[qlw + 1u], nsh) + two4(w[qhw + 1u], hsh) * 16.0;
    return array<vec4<f32>, 2>((q0 - 32.0) * d, (q1 - 32.0) * d);
}
