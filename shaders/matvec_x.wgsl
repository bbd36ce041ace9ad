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

// ---- The read path, named by the host ----
//
// A decode matvec's loop over x's row and its rows of W (matvec.wgsl's rows_part_of and matvec_norm_of,
// moe_matvec.wgsl's rows_part and swiglu_norm_matvec) takes one of these paths, by x's row offset and k, which the
// host knows when it records the dispatch: it names the path in MATVEC_PATH (kernels::matvec_path, from the same
// facts). Each path's condition tests MATVEC_PATH first, so that a variant's module (gpu::specialize) holds its
// own path alone, and then the facts themselves, falling to the path that reads one weight at a time where they
// do not hold: the results never depend on the host's choice, only the speed.
const PATH_TURNS: u32 = 1u; // quads, x four values a load, in turns across the subgroup (x_in_turns)
const PATH_QUADS_X: u32 = 2u; // quads, x four values a load (quads_of_x)
const PATH_QUADS: u32 = 3u; // quads, x a word's values at a time (rows_by_quad)
const PATH_ROUNDS: u32 = 4u; // words, MATVEC_UNROLL a round (rows_by_word)
const PATH_WORDS: u32 = 5u; // words, one a round
const PATH_WEIGHTS: u32 = 6u; // one weight at a time
override MATVEC_PATH: u32 = PATH_WEIGHTS;

// Whether a decode matvec reads W by quads (rows_by_quad) against x's row at x0 four values a load: x's row
// starts on a vec4. Else its quads take x a word at a time (x_quad_by_words). The choice is made before the loop
// over k: lavapipe runs both sides of a branch, masked, so a choice made per quad would cost both every time.
fn quads_of_x(x0: u32) -> bool {
    return rows_by_quad(p.k) && x0 % 4u == 0u;
}

// x's row at x0 (on a vec4: quads_of_x), at the columns of quad g of a weight row (the prelude's QuadXs), four
// values a load.
fn x_quad(x0: u32, g: u32) -> QuadXs {
    return quad_xs_of(quad_vec4s(x0, g));
}

// x_quad of a row that does not start on a vec4, a word's values at a time.
fn x_quad_by_words(x0: u32, g: u32) -> QuadXs {
    let i = 4u * g;
    return QuadXs(array(x_word(x0, i), x_word(x0, i + 1u), x_word(x0, i + 2u), x_word(x0, i + 3u)));
}

// ---- x read in turns (X_LANES in prelude.wgsl) ----
//
// Where x_in_turns, a decode matvec's loop over the quads of x's row runs in blocks of X_LANES quads: at the start
// of a block each invocation loads the x values of one of its quads (quad_vec4s: quad g0 + subgroup_lane()), and
// takes each quad's from the invocation that holds them (quad_in_lane). The whole workgroup runs such a loop
// with the same bounds: invocations whose rows lie past the matrix load their share of x and skip the products.
// The choice between it and the plain loop is made once, outside: lavapipe runs both sides of a branch, masked,
// so a choice made per quad would cost both every time.

// Whether the loops over x's row at x0 read it in turns: X_LANES set, one invocation per row group and a row
// that starts on a vec4.
fn x_in_turns(x0: u32) -> bool {
    return X_LANES > 1u && ROW_THREADS == 1u && x0 % 4u == 0u;
}

// Quads of a block read in turns from quad g0 of a loop that ends before quad `end`.
fn turns_from(g0: u32, end: u32) -> u32 {
    return min(X_LANES, end - g0);
}

// The x values of quad g of a weight row: its word_weights() vec4s of x's row at x0 (on a vec4), 0 past the row.
fn quad_vec4s(x0: u32, g: u32) -> array<vec4<f32>, 8> {
    var v: array<vec4<f32>, 8>;
    for (var q = 0u; q < word_weights(); q++) {
        v[q] = x_vec4(x0, g * quad_weights() + 4u * q);
    }
    return v;
}

// The QuadXs of the quad whose vec4s invocation `source` of the subgroup holds (quad_vec4s).
fn quad_in_lane(held: array<vec4<f32>, 8>, source: u32) -> QuadXs {
    var v: array<vec4<f32>, 8>;
    for (var q = 0u; q < word_weights(); q++) {
        v[q] = lane_value(held[q], source);
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
// the same sum, with a quarter of the loads (lavapipe pays per load, not per byte), and in turns (x_in_turns) an
// X_LANES-th of that.
fn x_sum_sq(x0: u32, lane: u32) -> f32 {
    var sum_sq = 0.0;
    if x_in_turns(x0) {
        let mine = 4u * subgroup_lane();
        for (var c0 = 0u; c0 < p.k; c0 += 4u * X_LANES) {
            let held = x_vec4(x0, c0 + mine); // 0 past the row: adds nothing
            for (var turn = 0u; turn < X_LANES; turn++) {
                let v = lane_value(held, turn);
                sum_sq += v.x * v.x;
                sum_sq += v.y * v.y;
                sum_sq += v.z * v.z;
                sum_sq += v.w * v.w;
            }
        }
        return sum_sq;
    }
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

// quad_vec4s of the normalised row.
fn quad_normalised_vec4s(x0: u32, g: u32, inv_rms: f32) -> array<vec4<f32>, 8> {
    var v: array<vec4<f32>, 8>;
    for (var q = 0u; q < word_weights(); q++) {
        v[q] = normalised_vec4(x0, g * quad_weights() + 4u * q, inv_rms);
    }
    return v;
}

// x_quad of the normalised row.
fn normalised_quad(x0: u32, g: u32, inv_rms: f32) -> QuadXs {
    return quad_xs_of(quad_normalised_vec4s(x0, g, inv_rms));
}

// x_quad_by_words of the normalised row.
fn normalised_quad_by_words(x0: u32, g: u32, inv_rms: f32) -> QuadXs {
    let i = 4u * g;
    return QuadXs(array(normalised_word(x0, i, inv_rms), normalised_word(x0, i + 1u, inv_rms),
        normalised_word(x0, i + 2u, inv_rms), normalised_word(x0, i + 3u, inv_rms)));
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
