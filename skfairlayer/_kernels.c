/*
 * Compiled full-data passes of the exact parity solver and of its Jacobian products.
 *
 * Optional: _compiled.py falls back to numpy when this module is not built. Each function is
 * one pass over the rows where numpy needs several passes, gathers or temporaries. Arrays
 * arrive through the buffer protocol (no numpy headers are needed to build): float64 ('d'),
 * uint8 group codes ('B') and intp ('n' / 'l' / 'q'), C-contiguous, checked here; codes must
 * be below the number of groups (checked). Loops release the GIL.
 *
 * On x86-64 CPUs with AVX-512 and up to 16 groups, the loops read the per-group table with
 * one register permute per 8 rows and compact flagged rows with a compress; elsewhere,
 * portable loops: for two groups written so that compilers vectorise them (built for AVX2
 * too with GCC on x86-64 Linux), for more groups a table read per row (per-group sums with
 * eight interleaved accumulator sets, so that consecutive rows of one group do not form one
 * dependency chain). All give the same outputs bit for bit; sums may differ in the order of
 * additions.
 *
 *   group_sums(s, codes, sums)                    sums[g] = sum of s over group g
 *   outside(s, codes, lo, hi, idx) -> m           idx[:m] = rows with s < lo[g] or s > hi[g]
 *   classify(s, codes, idx, bot, top, sx, nx, ntop, nbot) -> m
 *       over the rows idx: per group, sum of s and count (sx, nx), rows at or above top
 *       (ntop) and at or below bot (nbot); the other rows are moved to idx[:m]
 *   shift_clip(s, codes, shifts, lb, ub, out)     out[i] = clip(s[i] - shifts[g], lb, ub)
 *   lookup(codes, table, out)                     out[i] = table[g]
 *   free_sums(v, p, codes, lo, hi, out)           per group over rows with lo < p < hi: sum of
 *       v (out[:k]) and count (out[k:])
 *   free_shift(v, p, codes, lo, hi, shifts, out)  out[i] = v[i] - shifts[g] where
 *       lo < p[i] < hi, else 0
 *   newton(e, l, c, g, A, Q, present, eps, lo, hi, nu, max_iter) -> (status, t)
 *       the semismooth Newton iteration of _exact._newton on a reduced model (nu in/out)
 *   spread_stats(e, l, c, g, nu, out)             per-group sums for _exact._spread
 *   set_simd(on) -> previous, simd()              switch the AVX-512 loops (tests compare both)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LANES 8
/* Rows from which output passes use non-temporal stores. */
#define STREAM_FROM ((idx_t)1 << 18)

typedef Py_ssize_t idx_t;

/* ------------------------------------------------------------------ loops (no Python API) */

/* Portable loops. Tables hold one value per group (shifts, thresholds). */

static void sums_scalar(const double *restrict s, const uint8_t *restrict g, idx_t n, idx_t k,
                        double *restrict acc /* LANES * k, zeroed */, double *restrict out) {
    idx_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j * k + g[i + j]] += s[i + j];
    for (; i < n; i++) acc[g[i]] += s[i];
    for (idx_t c = 0; c < k; c++) {
        double t = 0.0;
        for (int j = 0; j < LANES; j++) t += acc[j * k + c];
        out[c] = t;
    }
}

static idx_t outside_scalar(const double *restrict s, const uint8_t *restrict g, idx_t i0,
                            idx_t n, const double *restrict lo, const double *restrict hi,
                            idx_t *restrict idx, idx_t m) {
    for (idx_t i = i0; i < n; i++) {
        double u = s[i];
        idx_t c = g[i];
        idx[m] = i;
        m += (u < lo[c]) | (u > hi[c]);
    }
    return m;
}

static void shift_clip_scalar(const double *restrict s, const uint8_t *restrict g, idx_t i0,
                              idx_t n, const double *restrict sh, double lb, double ub,
                              double *restrict out) {
    for (idx_t i = i0; i < n; i++) {
        double x = s[i] - sh[g[i]];
        x = x < lb ? lb : x;
        out[i] = x > ub ? ub : x;
    }
}

static void free_sums_scalar(const double *restrict v, const double *restrict p,
                             const uint8_t *restrict g, idx_t n, idx_t k, double lo, double hi,
                             double *restrict acc /* 2 * LANES * k, zeroed */,
                             double *restrict out /* 2 * k: sums, counts */) {
    double *cnt = acc + LANES * k;
    for (idx_t i = 0; i < n; i++) {
        double x = p[i];
        int f = (x > lo) & (x < hi);
        idx_t a = (i & (LANES - 1)) * k + g[i];
        acc[a] += f ? v[i] : 0.0;  /* a select, not f * v: held rows never contribute (inf, NaN) */
        cnt[a] += (double)f;
    }
    for (idx_t c = 0; c < k; c++) {
        double t = 0.0, m = 0.0;
        for (int j = 0; j < LANES; j++) {
            t += acc[j * k + c];
            m += cnt[j * k + c];
        }
        out[c] = t;
        out[k + c] = m;
    }
}

static void free_shift_scalar(const double *restrict v, const double *restrict p,
                              const uint8_t *restrict g, idx_t i0, idx_t n, double lo, double hi,
                              const double *restrict sh, double *restrict out) {
    for (idx_t i = i0; i < n; i++) {
        double x = p[i];
        out[i] = ((x > lo) & (x < hi)) ? v[i] - sh[g[i]] : 0.0;
    }
}

static void lookup_scalar(const uint8_t *restrict g, idx_t i0, idx_t n, const double *restrict tab,
                          double *restrict out) {
    for (idx_t i = i0; i < n; i++) out[i] = tab[g[i]];
}

/* Portable loops for two groups, written so that compilers vectorise them (a select between
 * two values instead of a table read, products instead of branches); with GCC on x86-64 Linux
 * they are compiled for AVX2 too and the CPU picks. Bit for bit the generic loops' results,
 * except the order of additions in sums. */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(SKFAIRLAYER_NO_CLONES)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* x where keep, else +0.0: a bit mask, so no branch and no inf * 0. */
static inline double keep_if(double x, int keep) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits &= (uint64_t)0 - (uint64_t)(keep != 0);
    memcpy(&x, &bits, sizeof x);
    return x;
}

CLONES static void sums_two(const double *restrict s, const uint8_t *restrict g, idx_t n,
                            double *restrict out) {
    double a[LANES] = {0}, b[LANES] = {0};
    idx_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            double x = s[i + j];
            a[j] += x;
            b[j] += keep_if(x, g[i + j]);
        }
    double A = 0.0, B = 0.0;
    for (int j = 0; j < LANES; j++) {
        A += a[j];
        B += b[j];
    }
    for (; i < n; i++) {
        double x = s[i];
        A += x;
        B += keep_if(x, g[i]);
    }
    out[0] = A - B;
    out[1] = B;
}

#define BLOCK 4096

CLONES static void flags_two(const double *restrict s, const uint8_t *restrict g, idx_t n,
                             double lo0, double lo1, double hi0, double hi1,
                             uint8_t *restrict fl) {
    for (idx_t i = 0; i < n; i++) {
        int one = g[i] != 0;
        double u = s[i], lo = one ? lo1 : lo0, hi = one ? hi1 : hi0;
        fl[i] = (uint8_t)((u < lo) | (u > hi));
    }
}

/* Flags of a block (vectorised), then its flagged rows, skipping 8 clear flags at a time. */
static idx_t outside_two(const double *restrict s, const uint8_t *restrict g, idx_t n,
                         const double *lo, const double *hi, idx_t *restrict idx) {
    uint8_t fl[BLOCK];
    idx_t m = 0;
    for (idx_t a = 0; a < n; a += BLOCK) {
        idx_t len = n - a < BLOCK ? n - a : BLOCK, j = 0;
        flags_two(s + a, g + a, len, lo[0], lo[1], hi[0], hi[1], fl);
        for (; j + 8 <= len; j += 8) {
            uint64_t w;
            memcpy(&w, fl + j, 8);
            if (!w) continue;
            for (int q = 0; q < 8; q++) {
                idx[m] = a + j + q;
                m += fl[j + q];
            }
        }
        for (; j < len; j++) {
            idx[m] = a + j;
            m += fl[j];
        }
    }
    return m;
}

CLONES static void shift_clip_two(const double *restrict s, const uint8_t *restrict g, idx_t n,
                                  const double *sh, double lb, double ub, double *restrict out) {
    double c0 = sh[0], c1 = sh[1];
    for (idx_t i = 0; i < n; i++) {
        double x = s[i] - (g[i] ? c1 : c0);
        x = x < lb ? lb : x;
        out[i] = x > ub ? ub : x;
    }
}

CLONES static void free_shift_two(const double *restrict v, const double *restrict p,
                                  const uint8_t *restrict g, idx_t n, double lo, double hi,
                                  const double *sh, double *restrict out) {
    double c0 = sh[0], c1 = sh[1];
    for (idx_t i = 0; i < n; i++) {
        double x = p[i], y = v[i] - (g[i] ? c1 : c0);
        out[i] = keep_if(y, (x > lo) & (x < hi));
    }
}

/* AVX-512 loops for up to 16 groups: the per-group table sits in two registers and is read
 * with one permute per 8 rows; flagged rows are compacted with a compress. Results equal the
 * portable loops' bit for bit, except the order of additions in sums. */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX512_PATH 1
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,popcnt")))

typedef struct {
    __m512d a, b;
} table16;

AVX512 static inline table16 load_table(const double *t, idx_t k) {
    double buf[16] = {0};
    for (idx_t c = 0; c < k; c++) buf[c] = t[c];
    table16 r = {_mm512_loadu_pd(buf), _mm512_loadu_pd(buf + 8)};
    return r;
}

AVX512 static inline __m512i codes8(const uint8_t *g) {
    return _mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)g));
}

AVX512 static inline __m512d lookup(table16 t, __m512i c) {
    return _mm512_permutex2var_pd(t.a, c, t.b);
}

AVX512 static void sums_two_avx512(const double *restrict s, const uint8_t *restrict g, idx_t n,
                                   double *restrict out) {
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
    idx_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d x0 = _mm512_loadu_pd(s + i), x1 = _mm512_loadu_pd(s + i + 8);
        __m128i c = _mm_loadu_si128((const __m128i *)(g + i));
        __mmask16 m = _mm_test_epi8_mask(c, c);
        a0 = _mm512_add_pd(a0, x0);
        a1 = _mm512_add_pd(a1, x1);
        b0 = _mm512_mask_add_pd(b0, (__mmask8)m, b0, x0);
        b1 = _mm512_mask_add_pd(b1, (__mmask8)(m >> 8), b1, x1);
    }
    double A = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
    double B = _mm512_reduce_add_pd(_mm512_add_pd(b0, b1));
    for (; i < n; i++) {
        A += s[i];
        B += g[i] ? s[i] : 0.0;
    }
    out[0] = A - B;
    out[1] = B;
}

AVX512 static idx_t outside_avx512(const double *restrict s, const uint8_t *restrict g, idx_t n,
                                   idx_t k, const double *lo, const double *hi,
                                   idx_t *restrict idx) {
    table16 tl = load_table(lo, k), th = load_table(hi, k);
    __m512i iota = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), eight = _mm512_set1_epi64(8);
    idx_t i = 0, m = 0;
    for (; i + 8 <= n; i += 8) {
        __m512i c = codes8(g + i);
        __m512d x = _mm512_loadu_pd(s + i);
        __mmask8 f = _mm512_cmp_pd_mask(x, lookup(tl, c), _CMP_LT_OQ) |
                     _mm512_cmp_pd_mask(x, lookup(th, c), _CMP_GT_OQ);
        /* Stored unconditionally (no branch to mispredict); m + 8 <= i + 8 <= n. */
        _mm512_storeu_si512((void *)(idx + m), _mm512_maskz_compress_epi64(f, iota));
        m += _mm_popcnt_u32(f);
        iota = _mm512_add_epi64(iota, eight);
    }
    return outside_scalar(s, g, i, n, lo, hi, idx, m);
}

/* Output passes over large arrays use non-temporal stores (no read for ownership of lines
 * about to be overwritten) from the first 64-byte boundary of the output: the number of rows
 * before it, or -1 (regular stores) when the output is small or not 8-byte aligned. */
static idx_t stream_head(const double *out, idx_t n) {
    if (n < STREAM_FROM || ((uintptr_t)out & 7) != 0) return -1;
    return (idx_t)(((64 - ((uintptr_t)out & 63)) & 63) / 8);
}

AVX512 static inline void store8(double *out, __m512d y, int stream) {
    if (stream)
        _mm512_stream_pd(out, y);
    else
        _mm512_storeu_pd(out, y);
}

AVX512 static void shift_clip_avx512(const double *restrict s, const uint8_t *restrict g, idx_t n,
                                     idx_t k, const double *sh, double lb, double ub,
                                     double *restrict out) {
    table16 t = load_table(sh, k);
    __m512d l = _mm512_set1_pd(lb), u = _mm512_set1_pd(ub);
    idx_t head = stream_head(out, n), i = head > 0 ? head : 0;
    shift_clip_scalar(s, g, 0, i, sh, lb, ub, out);
    for (; i + 8 <= n; i += 8) {
        __m512d x = _mm512_sub_pd(_mm512_loadu_pd(s + i), lookup(t, codes8(g + i)));
        store8(out + i, _mm512_min_pd(_mm512_max_pd(x, l), u), head >= 0);
    }
    if (head >= 0) _mm_sfence();
    shift_clip_scalar(s, g, i, n, sh, lb, ub, out);
}

AVX512 static void lookup_avx512(const uint8_t *restrict g, idx_t n, idx_t k, const double *tab,
                                 double *restrict out) {
    table16 t = load_table(tab, k);
    idx_t i = 0;
    for (; i + 8 <= n; i += 8) _mm512_storeu_pd(out + i, lookup(t, codes8(g + i)));
    lookup_scalar(g, i, n, tab, out);
}

AVX512 static void free_sums_two_avx512(const double *restrict v, const double *restrict p,
                                        const uint8_t *restrict g, idx_t n, double lo, double hi,
                                        double *restrict out) {
    __m512d a = _mm512_setzero_pd(), b = a, l = _mm512_set1_pd(lo), h = _mm512_set1_pd(hi);
    idx_t ca = 0, cb = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m512d x = _mm512_loadu_pd(p + i), y = _mm512_loadu_pd(v + i);
        __m128i c = _mm_loadl_epi64((const __m128i *)(g + i));
        __mmask8 one = (__mmask8)_mm_test_epi8_mask(c, c);
        __mmask8 f = _mm512_cmp_pd_mask(x, l, _CMP_GT_OQ) & _mm512_cmp_pd_mask(x, h, _CMP_LT_OQ);
        a = _mm512_mask_add_pd(a, f & ~one, a, y);
        b = _mm512_mask_add_pd(b, f & one, b, y);
        ca += _mm_popcnt_u32(f & ~one);
        cb += _mm_popcnt_u32(f & one);
    }
    double A = _mm512_reduce_add_pd(a), B = _mm512_reduce_add_pd(b);
    for (; i < n; i++) {
        if (p[i] > lo && p[i] < hi) {
            if (g[i]) {
                B += v[i];
                cb++;
            } else {
                A += v[i];
                ca++;
            }
        }
    }
    out[0] = A;
    out[1] = B;
    out[2] = (double)ca;
    out[3] = (double)cb;
}

AVX512 static void free_shift_avx512(const double *restrict v, const double *restrict p,
                                     const uint8_t *restrict g, idx_t n, idx_t k, double lo,
                                     double hi, const double *sh, double *restrict out) {
    table16 t = load_table(sh, k);
    __m512d l = _mm512_set1_pd(lo), h = _mm512_set1_pd(hi);
    idx_t head = stream_head(out, n), i = head > 0 ? head : 0;
    free_shift_scalar(v, p, g, 0, i, lo, hi, sh, out);
    for (; i + 8 <= n; i += 8) {
        __m512d x = _mm512_loadu_pd(p + i);
        __mmask8 f = _mm512_cmp_pd_mask(x, l, _CMP_GT_OQ) & _mm512_cmp_pd_mask(x, h, _CMP_LT_OQ);
        __m512d y = _mm512_maskz_sub_pd(f, _mm512_loadu_pd(v + i), lookup(t, codes8(g + i)));
        store8(out + i, y, head >= 0);
    }
    if (head >= 0) _mm_sfence();
    free_shift_scalar(v, p, g, i, n, lo, hi, sh, out);
}

static int avx512_ok(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
#else
#define HAVE_AVX512_PATH 0
static int avx512_ok(void) { return 0; }
#endif

/* Set at import (and by set_simd for tests): whether the AVX-512 loops run. */
static int use_simd = 0;
#define SIMD(k) (HAVE_AVX512_PATH && use_simd && (k) <= 16)

/* ------------------------------------------------------------------ Newton on a model */

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* _band_linear of _exact.py: the KKT point of the band problem for means a_g - b_g nu over
 * the q groups listed; writes nu (q values) and returns t. cand is scratch of 2q doubles. */
static double band_linear(const double *a, const double *b, idx_t q, double eps, double *nu,
                          double *cand) {
    for (idx_t j = 0; j < q; j++) {
        cand[j] = a[j] - eps;
        cand[q + j] = a[j];
    }
    qsort(cand, (size_t)(2 * q), sizeof(double), cmp_double);
#define PHI(t, out)                                                       \
    do {                                                                  \
        double acc_ = 0.0;                                                \
        for (idx_t j_ = 0; j_ < q; j_++) {                                \
            double up_ = a[j_] - eps - (t), lo_ = a[j_] - (t);            \
            acc_ += ((up_ > 0.0 ? up_ : 0.0) + (lo_ < 0.0 ? lo_ : 0.0)) / b[j_]; \
        }                                                                 \
        (out) = acc_;                                                     \
    } while (0)
    double t, first, last;
    PHI(cand[0], first);
    PHI(cand[2 * q - 1], last);
    if (first <= 0.0 || last > 0.0) {
        double num = 0.0, den = 0.0;
        for (idx_t j = 0; j < q; j++) {
            num += (first <= 0.0 ? a[j] - eps : a[j]) / b[j];
            den += 1.0 / b[j];
        }
        t = num / den;
    } else {
        idx_t lo = 0, hi = 2 * q - 1;  /* phi(cand[lo]) > 0 >= phi(cand[hi]); phi non-increasing */
        double ylo = first, yhi = last;
        while (hi - lo > 1) {
            idx_t mid = (lo + hi) / 2;
            double y;
            PHI(cand[mid], y);
            if (y <= 0.0) {
                hi = mid;
                yhi = y;
            } else {
                lo = mid;
                ylo = y;
            }
        }
        double t0 = cand[lo], t1 = cand[hi];
        if (ylo == yhi) {
            t = t1;
        } else {
            t = t0 + ylo * (t1 - t0) / (ylo - yhi);
            t = t < t0 ? t0 : (t > t1 ? t1 : t);
        }
    }
#undef PHI
    for (idx_t j = 0; j < q; j++) {
        double up = a[j] - eps - t, lo = a[j] - t;
        nu[j] = ((up > 0.0 ? up : 0.0) + (lo < 0.0 ? lo : 0.0)) / b[j];
    }
    return t;
}

/* _newton of _exact.py. Returns 1 (converged inside [lo, hi]), 2 (converged outside), 0 (no
 * convergence within max_iter, or a flat linearisation). */
static int newton(const double *e, const double *l, const double *c, const idx_t *g, idx_t m,
                  idx_t k, const double *A, const double *Q, const uint8_t *present, double eps,
                  const double *lo, const double *hi, double *nu, int max_iter, double *t_out,
                  uint8_t *state, double *work /* 7 k */, idx_t *groups /* k */) {
    double *sc = work, *sb = work + k, *aa = work + 2 * k, *bb = work + 3 * k, *step = work + 4 * k,
           *cand = work + 5 * k;
    idx_t q = 0;
    for (idx_t j = 0; j < k; j++) {
        if (present[j]) groups[q++] = j;
        else nu[j] = 0.0;
    }
    if (q == 0) return 0;
    double t = 0.0;
    for (int it = 0; it < max_iter; it++) {
        for (idx_t j = 0; j < k; j++) sc[j] = sb[j] = 0.0;
        int changed = 0;
        for (idx_t i = 0; i < m; i++) {
            double d = e[i] - nu[g[i]], width = e[i] - l[i];
            int top = d >= 0.0, bottom = d <= width, free = !(top | bottom);
            uint8_t s = (uint8_t)(top | (free << 1));
            changed |= s != state[i];
            state[i] = s;
            sc[g[i]] += c[i] * (free ? d : (bottom ? width : 0.0));
            sb[g[i]] += free ? c[i] : 0.0;
        }
        if (it > 0 && !changed) {
            int ok = 1;
            for (idx_t j = 0; j < q; j++) {
                double v = nu[groups[j]];
                ok = ok && v >= lo[groups[j]] && v <= hi[groups[j]];
            }
            *t_out = t;
            return ok ? 1 : 2;
        }
        for (idx_t j = 0; j < q; j++) {
            idx_t gj = groups[j];
            double v = nu[gj], b = Q[gj] + sb[gj];
            if (!(b > 0.0)) return 0;
            aa[j] = (A[gj] - Q[gj] * v + sc[gj]) + b * v;
            bb[j] = b;
        }
        t = band_linear(aa, bb, q, eps, step, cand);
        for (idx_t j = 0; j < q; j++) {
            if (!isfinite(step[j])) return 0;
            nu[groups[j]] = step[j];
        }
    }
    return 0;
}

static int codes_below(const uint8_t *restrict g, idx_t n, idx_t k) {
    uint8_t top = 0;
    for (idx_t i = 0; i < n; i++) top = g[i] > top ? g[i] : top;
    return n == 0 || (idx_t)top < k;
}

/* ------------------------------------------------------------------ buffers */

static int fmt_char(const Py_buffer *v) {
    const char *f = v->format ? v->format : "B";
    while (*f == '@' || *f == '=' || *f == '<' || *f == '>' || *f == '!') f++;
    return (f[0] && !f[1]) ? f[0] : 0;
}

/* Borrow a C-contiguous 1-D buffer: kind 'd' float64, 'B' uint8, 'n' intp. */
static int get(PyObject *obj, Py_buffer *v, char kind, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, v, flags) < 0) return -1;
    int c = fmt_char(v), ok;
    if (kind == 'd')
        ok = c == 'd' && v->itemsize == 8;
    else if (kind == 'B')
        ok = c == 'B' && v->itemsize == 1;
    else
        ok = (c == 'n' || c == 'l' || c == 'q') && v->itemsize == (Py_ssize_t)sizeof(idx_t);
    ok = ok && v->ndim <= 1;
    if (!ok) {
        PyBuffer_Release(v);
        v->obj = NULL;
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous 1-D array of %s.", name,
                     kind == 'd' ? "float64" : kind == 'B' ? "uint8" : "intp");
        return -1;
    }
    return 0;
}

static idx_t count(const Py_buffer *v) { return v->len / v->itemsize; }

static void release(Py_buffer *v, int n) {
    for (int i = 0; i < n; i++)
        if (v[i].obj) PyBuffer_Release(&v[i]);
}

/* Parse `spec` (kinds, upper case = writable) into buffers v[0..]; 0 on success. */
static int get_all(PyObject *const *o, Py_buffer *v, const char *spec, const char *const *names) {
    int n = (int)strlen(spec);
    memset(v, 0, (size_t)n * sizeof(Py_buffer));
    for (int j = 0; j < n; j++) {
        char c = spec[j];
        int w = c == 'D' || c == 'N';
        char kind = c == 'D' ? 'd' : c == 'N' ? 'n' : c;
        if (get(o[j], &v[j], kind, w, names[j])) {
            release(v, n);
            return -1;
        }
    }
    return 0;
}

static PyObject *fail(Py_buffer *v, int n, PyObject *exc, const char *msg) {
    release(v, n);
    PyErr_SetString(exc, msg);
    return NULL;
}

#define CODES_MSG "codes must be smaller than the number of groups."
#define SHAPE_MSG "inconsistent array lengths."

/* ------------------------------------------------------------------ functions */

static PyObject *py_group_sums(PyObject *self, PyObject *args) {
    PyObject *o[3];
    Py_buffer v[3];
    static const char *names[] = {"s", "codes", "sums"};
    if (!PyArg_ParseTuple(args, "OOO", &o[0], &o[1], &o[2])) return NULL;
    if (get_all(o, v, "dBD", names)) return NULL;
    idx_t n = count(&v[0]), k = count(&v[2]);
    if (count(&v[1]) != n || k < 1) return fail(v, 3, PyExc_ValueError, SHAPE_MSG);
    double *acc = PyMem_Calloc((size_t)(LANES * k), sizeof(double));
    if (!acc) {
        release(v, 3);
        return PyErr_NoMemory();
    }
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = codes_below(v[1].buf, n, k);
#if HAVE_AVX512_PATH
    if (ok && k == 2 && SIMD(k)) sums_two_avx512(v[0].buf, v[1].buf, n, v[2].buf);
    else
#endif
    if (ok && k == 2) sums_two(v[0].buf, v[1].buf, n, v[2].buf);
    else if (ok) sums_scalar(v[0].buf, v[1].buf, n, k, acc, v[2].buf);
    Py_END_ALLOW_THREADS
    PyMem_Free(acc);
    if (!ok) return fail(v, 3, PyExc_ValueError, CODES_MSG);
    release(v, 3);
    Py_RETURN_NONE;
}

static PyObject *py_outside(PyObject *self, PyObject *args) {
    PyObject *o[5];
    Py_buffer v[5];
    static const char *names[] = {"s", "codes", "lo", "hi", "idx"};
    if (!PyArg_ParseTuple(args, "OOOOO", &o[0], &o[1], &o[2], &o[3], &o[4])) return NULL;
    if (get_all(o, v, "dBddN", names)) return NULL;
    idx_t n = count(&v[0]), k = count(&v[2]), m = 0;
    if (count(&v[1]) != n || count(&v[4]) < n || count(&v[3]) != k || k < 1)
        return fail(v, 5, PyExc_ValueError, SHAPE_MSG);
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = codes_below(v[1].buf, n, k);
#if HAVE_AVX512_PATH
    if (ok && SIMD(k)) m = outside_avx512(v[0].buf, v[1].buf, n, k, v[2].buf, v[3].buf, v[4].buf);
    else
#endif
    if (ok && k == 2) m = outside_two(v[0].buf, v[1].buf, n, v[2].buf, v[3].buf, v[4].buf);
    else if (ok) m = outside_scalar(v[0].buf, v[1].buf, 0, n, v[2].buf, v[3].buf, v[4].buf, 0);
    Py_END_ALLOW_THREADS
    if (!ok) return fail(v, 5, PyExc_ValueError, CODES_MSG);
    release(v, 5);
    return PyLong_FromSsize_t(m);
}

static PyObject *py_classify(PyObject *self, PyObject *args) {
    PyObject *o[9];
    Py_buffer v[9];
    static const char *names[] = {"s", "codes", "idx", "bot", "top", "sx", "nx", "ntop", "nbot"};
    if (!PyArg_ParseTuple(args, "OOOOOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6],
                          &o[7], &o[8]))
        return NULL;
    if (get_all(o, v, "dBNddDDDD", names)) return NULL;
    idx_t n = count(&v[0]), m = count(&v[2]), k = count(&v[3]);
    int shapes = count(&v[1]) == n && k >= 1;
    for (int j = 4; j < 9; j++) shapes = shapes && count(&v[j]) == k;
    if (!shapes) return fail(v, 9, PyExc_ValueError, SHAPE_MSG);
    const double *s = v[0].buf, *bot = v[3].buf, *top = v[4].buf;
    const uint8_t *g = v[1].buf;
    idx_t *idx = v[2].buf;
    double *sx = v[5].buf, *nx = v[6].buf, *nt = v[7].buf, *nb = v[8].buf;
    idx_t kept = 0;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    for (idx_t c = 0; c < k; c++) sx[c] = nx[c] = nt[c] = nb[c] = 0.0;
    for (idx_t j = 0; j < m; j++) {
        idx_t i = idx[j];
        if (i < 0 || i >= n || g[i] >= k) {
            ok = 0;
            break;
        }
        idx_t c = g[i];
        double u = s[i];
        sx[c] += u;
        nx[c] += 1.0;
        if (u >= top[c])
            nt[c] += 1.0;
        else if (u <= bot[c])
            nb[c] += 1.0;
        else
            idx[kept++] = i;
    }
    Py_END_ALLOW_THREADS
    release(v, 9);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "idx must hold row indices of rows with valid codes.");
        return NULL;
    }
    return PyLong_FromSsize_t(kept);
}

static PyObject *py_shift_clip(PyObject *self, PyObject *args) {
    PyObject *o[4];
    double lb, ub;
    Py_buffer v[4];
    static const char *names[] = {"s", "codes", "shifts", "out"};
    if (!PyArg_ParseTuple(args, "OOOddO", &o[0], &o[1], &o[2], &lb, &ub, &o[3])) return NULL;
    if (get_all(o, v, "dBdD", names)) return NULL;
    idx_t n = count(&v[0]), k = count(&v[2]);
    if (count(&v[1]) != n || count(&v[3]) != n || k < 1)
        return fail(v, 4, PyExc_ValueError, SHAPE_MSG);
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = codes_below(v[1].buf, n, k);
#if HAVE_AVX512_PATH
    if (ok && SIMD(k)) shift_clip_avx512(v[0].buf, v[1].buf, n, k, v[2].buf, lb, ub, v[3].buf);
    else
#endif
    if (ok && k == 2) shift_clip_two(v[0].buf, v[1].buf, n, v[2].buf, lb, ub, v[3].buf);
    else if (ok) shift_clip_scalar(v[0].buf, v[1].buf, 0, n, v[2].buf, lb, ub, v[3].buf);
    Py_END_ALLOW_THREADS
    if (!ok) return fail(v, 4, PyExc_ValueError, CODES_MSG);
    release(v, 4);
    Py_RETURN_NONE;
}

static PyObject *py_lookup(PyObject *self, PyObject *args) {
    PyObject *o[3];
    Py_buffer v[3];
    static const char *names[] = {"codes", "table", "out"};
    if (!PyArg_ParseTuple(args, "OOO", &o[0], &o[1], &o[2])) return NULL;
    if (get_all(o, v, "BdD", names)) return NULL;
    idx_t n = count(&v[0]), k = count(&v[1]);
    if (count(&v[2]) != n || k < 1) return fail(v, 3, PyExc_ValueError, SHAPE_MSG);
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = codes_below(v[0].buf, n, k);
#if HAVE_AVX512_PATH
    if (ok && SIMD(k)) lookup_avx512(v[0].buf, n, k, v[1].buf, v[2].buf);
    else
#endif
    if (ok) lookup_scalar(v[0].buf, 0, n, v[1].buf, v[2].buf);
    Py_END_ALLOW_THREADS
    if (!ok) return fail(v, 3, PyExc_ValueError, CODES_MSG);
    release(v, 3);
    Py_RETURN_NONE;
}

static PyObject *py_free_sums(PyObject *self, PyObject *args) {
    PyObject *o[4];
    double lo, hi;
    Py_buffer v[4];
    static const char *names[] = {"v", "p", "codes", "out"};
    if (!PyArg_ParseTuple(args, "OOOddO", &o[0], &o[1], &o[2], &lo, &hi, &o[3])) return NULL;
    if (get_all(o, v, "ddBD", names)) return NULL;
    idx_t n = count(&v[0]), k = count(&v[3]) / 2;
    if (count(&v[1]) != n || count(&v[2]) != n || k < 1 || count(&v[3]) != 2 * k)
        return fail(v, 4, PyExc_ValueError, SHAPE_MSG);
    double *acc = PyMem_Calloc((size_t)(2 * LANES * k), sizeof(double));
    if (!acc) {
        release(v, 4);
        return PyErr_NoMemory();
    }
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = codes_below(v[2].buf, n, k);
#if HAVE_AVX512_PATH
    if (ok && k == 2 && SIMD(k))  /* sums then counts, as for many groups */
        free_sums_two_avx512(v[0].buf, v[1].buf, v[2].buf, n, lo, hi, v[3].buf);
    else
#endif
    if (ok) free_sums_scalar(v[0].buf, v[1].buf, v[2].buf, n, k, lo, hi, acc, v[3].buf);
    Py_END_ALLOW_THREADS
    PyMem_Free(acc);
    if (!ok) return fail(v, 4, PyExc_ValueError, CODES_MSG);
    release(v, 4);
    Py_RETURN_NONE;
}

static PyObject *py_free_shift(PyObject *self, PyObject *args) {
    PyObject *o[5];
    double lo, hi;
    Py_buffer v[5];
    static const char *names[] = {"v", "p", "codes", "shifts", "out"};
    if (!PyArg_ParseTuple(args, "OOOddOO", &o[0], &o[1], &o[2], &lo, &hi, &o[3], &o[4]))
        return NULL;
    if (get_all(o, v, "ddBdD", names)) return NULL;
    idx_t n = count(&v[0]), k = count(&v[3]);
    if (count(&v[1]) != n || count(&v[2]) != n || count(&v[4]) != n || k < 1)
        return fail(v, 5, PyExc_ValueError, SHAPE_MSG);
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = codes_below(v[2].buf, n, k);
#if HAVE_AVX512_PATH
    if (ok && SIMD(k))
        free_shift_avx512(v[0].buf, v[1].buf, v[2].buf, n, k, lo, hi, v[3].buf, v[4].buf);
    else
#endif
    if (ok && k == 2)
        free_shift_two(v[0].buf, v[1].buf, v[2].buf, n, lo, hi, v[3].buf, v[4].buf);
    else if (ok)
        free_shift_scalar(v[0].buf, v[1].buf, v[2].buf, 0, n, lo, hi, v[3].buf, v[4].buf);
    Py_END_ALLOW_THREADS
    if (!ok) return fail(v, 5, PyExc_ValueError, CODES_MSG);
    release(v, 5);
    Py_RETURN_NONE;
}

static PyObject *py_newton(PyObject *self, PyObject *args) {
    PyObject *o[11];
    double eps;
    int max_iter;
    Py_buffer v[11];
    static const char *names[] = {"e", "l", "c", "g", "A", "Q", "present", "lo", "hi", "nu",
                                  "unused"};
    if (!PyArg_ParseTuple(args, "OOOOOOOdOOOi", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6],
                          &eps, &o[7], &o[8], &o[9], &max_iter))
        return NULL;
    if (get_all(o, v, "dddnddBddD", names)) return NULL;
    idx_t m = count(&v[0]), k = count(&v[4]);
    int shapes = count(&v[1]) == m && count(&v[2]) == m && count(&v[3]) == m && k >= 1;
    for (int j = 5; j < 10; j++) shapes = shapes && count(&v[j]) == k;
    if (!shapes) return fail(v, 10, PyExc_ValueError, SHAPE_MSG);
    const idx_t *g = v[3].buf;
    for (idx_t i = 0; i < m; i++)
        if (g[i] < 0 || g[i] >= k) return fail(v, 10, PyExc_ValueError, CODES_MSG);
    uint8_t *state = PyMem_Malloc((size_t)(m > 0 ? m : 1));
    double *work = PyMem_Malloc((size_t)(7 * k) * sizeof(double));
    idx_t *groups = PyMem_Malloc((size_t)k * sizeof(idx_t));
    if (!state || !work || !groups) {
        PyMem_Free(state);
        PyMem_Free(work);
        PyMem_Free(groups);
        release(v, 10);
        return PyErr_NoMemory();
    }
    memset(state, 0xff, (size_t)(m > 0 ? m : 1));
    double t = 0.0;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = newton(v[0].buf, v[1].buf, v[2].buf, g, m, k, v[4].buf, v[5].buf, v[6].buf, eps,
                    v[7].buf, v[8].buf, v[9].buf, max_iter, &t, state, work, groups);
    Py_END_ALLOW_THREADS
    PyMem_Free(state);
    PyMem_Free(work);
    PyMem_Free(groups);
    release(v, 10);
    return Py_BuildValue("id", status, t);
}

/* Per-group statistics of a subsample at multipliers nu, for _spread of _exact.py: out[0:k]
 * slope sum c [free], out[k:2k] sum z, out[2k:3k] sum z^2, out[3k:4k] sum (l - e), with
 * d = e - nu_g and z = c (clip(d, -(l - e), 0) - d). */
static PyObject *py_spread_stats(PyObject *self, PyObject *args) {
    PyObject *o[6];
    Py_buffer v[6];
    static const char *names[] = {"e", "l", "c", "g", "nu", "out"};
    if (!PyArg_ParseTuple(args, "OOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5])) return NULL;
    if (get_all(o, v, "dddndD", names)) return NULL;
    idx_t m = count(&v[0]), k = count(&v[4]);
    if (count(&v[1]) != m || count(&v[2]) != m || count(&v[3]) != m || count(&v[5]) != 4 * k)
        return fail(v, 6, PyExc_ValueError, SHAPE_MSG);
    const double *e = v[0].buf, *l = v[1].buf, *c = v[2].buf, *nu = v[4].buf;
    const idx_t *g = v[3].buf;
    double *out = v[5].buf;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    for (idx_t j = 0; j < 4 * k; j++) out[j] = 0.0;
    for (idx_t i = 0; i < m; i++) {
        idx_t q = g[i];
        if (q < 0 || q >= k) {
            ok = 0;
            break;
        }
        double d = e[i] - nu[q], w = l[i] - e[i];
        double clipped = d < -w ? -w : (d > 0.0 ? 0.0 : d), z = c[i] * (clipped - d);
        out[q] += (d < 0.0 && d > -w) ? c[i] : 0.0;
        out[k + q] += z;
        out[2 * k + q] += z * z;
        out[3 * k + q] += w;
    }
    Py_END_ALLOW_THREADS
    release(v, 6);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, CODES_MSG);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    int before = use_simd;
    use_simd = on && avx512_ok();
    return PyBool_FromLong(before);
}

static PyObject *py_simd(PyObject *self, PyObject *args) { return PyBool_FromLong(use_simd); }

static PyMethodDef methods[] = {
    {"newton", py_newton, METH_VARARGS,
     "newton(e, l, c, g, A, Q, present, eps, lo, hi, nu, max_iter) -> (status, t)"},
    {"spread_stats", py_spread_stats, METH_VARARGS, "spread_stats(e, l, c, g, nu, out)"},
    {"set_simd", py_set_simd, METH_VARARGS,
     "set_simd(on) -> previous: use the AVX-512 loops when the CPU has them (tests)."},
    {"simd", py_simd, METH_NOARGS, "simd() -> whether the AVX-512 loops run."},
    {"group_sums", py_group_sums, METH_VARARGS, "group_sums(s, codes, sums)"},
    {"outside", py_outside, METH_VARARGS, "outside(s, codes, lo, hi, idx) -> m"},
    {"classify", py_classify, METH_VARARGS,
     "classify(s, codes, idx, bot, top, sx, nx, ntop, nbot) -> m"},
    {"shift_clip", py_shift_clip, METH_VARARGS, "shift_clip(s, codes, shifts, lb, ub, out)"},
    {"lookup", py_lookup, METH_VARARGS, "lookup(codes, table, out): out = table[codes]"},
    {"free_sums", py_free_sums, METH_VARARGS, "free_sums(v, p, codes, lo, hi, out)"},
    {"free_shift", py_free_shift, METH_VARARGS, "free_shift(v, p, codes, lo, hi, shifts, out)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Compiled full-data passes of the exact parity solver (see _kernels.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void) {
    use_simd = avx512_ok();
    return PyModule_Create(&module);
}
