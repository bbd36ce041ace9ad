// matvec_x.wgsl: how the decode matvecs (matvec.wgsl, moe_matvec.wgsl) read a row of x, and of rms_norm(x), for
// the weights they multiply: by value, by word (the prelude's X8) or by quad (QuadXs), four values a load where the
// row starts on a vec4. Placed after matmul_common.wgsl or moe_common.wgsl; reads the shader's x, w and norm_w,
// all bound as vec4, directly and through x_value, w_word and norm_value.

// Element i of x, word i of w (gate / down in the experts), element c of norm_w.
fn x_value(i: u32) -> f32 {
    return x[i / 4u][i % 4u];
}

fn w_word(i: u32) -> u32 {
    return w[i / 4u][i % 4u];
}

fn norm_value(c: u32) -> f32 {
    return norm_w[c / 4u][c % 4u];
}

// x[x0 + c], 0 past the row (c >= k); the load clamped into the row, so that it needs no branch.
fn x_at(x0: u32, c: u32) -> f32 {
    return select(0.0, x_value(x0 + min(c, p.k - 1u)), c < p.k);
}

// x's row at x0, at the columns of word i of a weight row (the prelude's X8).
fn x_word(x0: u32, i: u32) -> X8 {
    let per = word_weights();
    let c = i * per;
    var xs: X8;
    xs.a.x = x_at(x0, c);
    if per >= 2u {
        xs.a.y = x_at(x0, c + 1u);
    }
    if per >= 4u {
        xs.a.z = x_at(x0, c + 2u);
        xs.a.w = x_at(x0, c + 3u);
    }
    if per == 8u {
        xs.b = vec4(x_at(x0, c + 4u), x_at(x0, c + 5u), x_at(x0, c + 6u), x_at(x0, c + 7u));
    }
    return xs;
}

// x's row at x0, at the columns of quad g of a weight row (the prelude's QuadXs): four values a load where the
// row starts on a vec4.
fn x_quad(x0: u32, g: u32) -> QuadXs {
    let i = 4u * g;
    if x0 % 4u != 0u {
        return QuadXs(array(x_word(x0, i), x_word(x0, i + 1u), x_word(x0, i + 2u), x_word(x0, i + 3u)));
    }
    var v: array<vec4<f32>, 8>;
    for (var q = 0u; q < word_weights(); q++) {
        v[q] = x_vec4(x0, i * word_weights() + 4u * q);
    }
    return quad_xs_of(v);
}

// x's row at x0, columns c .. c + 3, in one load (x0 and c multiples of 4); 0 past the row.
fn x_vec4(x0: u32, c: u32) -> vec4<f32> {
    let v = x[(x0 + min(c, p.k - 1u)) / 4u];
    return select(vec4(0.0), v, vec4(c) + vec4(0u, 1u, 2u, 3u) < vec4(p.k));
}

// The sum of x[x0 + c]^2 over the lane's columns c (lane % ROW_THREADS, then every ROW_THREADS-th), in
// rms_norm.wgsl's order. With one invocation per row (ROW_THREADS 1: CPU adapters, where every invocation sums
// the whole row) a row that starts on a vec4 is loaded four values a load, the squares added in the same order:
// the same sum, with a quarter of the loads (lavapipe pays per load, not per byte).
fn x_sum_sq(x0: u32, lane: u32) -> f32 {
    var sum_sq = 0.0;
    if ROW_THREADS == 1u && x0 % 4u == 0u {
        for (var c = 0u; c < p.k; c += 4u) {
            let v = x_vec4(x0, c); // 0 past the row: adds nothing
            sum_sq += v.x * v.x;
            sum_sq += v.y * v.y;
            sum_sq += v.z * v.z;
            sum_sq += v.w * v.w;
        }
        return sum_sq;
    }
    for (var c = lane % ROW_THREADS; c < p.k; c += ROW_THREADS) {
        let v = x_value(x0 + c);
        sum_sq += v * v;
    }
    return sum_sq;
}

// rms_norm(x)[r, c], as rms_norm.wgsl computes it, given the row's 1 / rms.
fn normalised(x0: u32, c: u32, inv_rms: f32) -> f32 {
    return norm_value(c) * (x_value(x0 + c) * inv_rms);
}

// x_word of the normalised row.
fn normalised_word(x0: u32, i: u32, inv_rms: f32) -> X8 {
    let per = word_weights();
    var xs: X8;
    xs.a.x = normalised_at(x0, i * per, inv_rms);
    if per >= 2u {
        xs.a.y = normalised_at(x0, i * per + 1u, inv_rms);
    }
    if per >= 4u {
        xs.a.z = normalised_at(x0, i * per + 2u, inv_rms);
        xs.a.w = normalised_at(x0, i * per + 3u, inv_rms);
    }
    if per == 8u {
        let c = i * per;
        xs.b = vec4(normalised_at(x0, c + 4u, inv_rms), normalised_at(x0, c + 5u, inv_rms),
            normalised_at(x0, c + 6u, inv_rms), normalised_at(x0, c + 7u, inv_rms));
    }
    return xs;
}

// x_quad of the normalised row.
fn normalised_quad(x0: u32, g: u32, inv_rms: f32) -> QuadXs {
    let i = 4u * g;
    if x0 % 4u != 0u {
        return QuadXs(array(normalised_word(x0, i, inv_rms), normalised_word(x0, i + 1u, inv_rms),
            normalised_word(x0, i + 2u, inv_rms), normalised_word(x0, i + 3u, inv_rms)));
    }
    var v: array<vec4<f32>, 8>;
    for (var q = 0u; q < word_weights(); q++) {
        v[q] = normalised_vec4(x0, i * word_weights() + 4u * q, inv_rms);
    }
    return quad_xs_of(v);
}

// The normalised row at columns c .. c + 3, one load each of x and norm_w (x0 and c multiples of 4); 0 past the
// row.
fn normalised_vec4(x0: u32, c: u32, inv_rms: f32) -> vec4<f32> {
    let at = min(c, p.k - 1u);
    let v = norm_w[at / 4u] * (x[(x0 + at) / 4u] * inv_rms);
    return select(vec4(0.0), v, vec4(c) + vec4(0u, 1u, 2u, 3u) < vec4(p.k));
}

// normalised(x0, c, inv_rms), 0 past the row; the loads clamped into it.
fn normalised_at(x0: u32, c: u32, inv_rms: f32) -> f32 {
    return select(0.0, normalised(x0, min(c, p.k - 1u), inv_rms), c < p.k);
}
