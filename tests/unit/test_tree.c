/* The shared red-black/range tree: ordering, balance, summaries and overlap queries against a
 * brute-force model over a fixed-seed random sequence of inserts, erases and in-place length
 * changes; the gap walk against a bitmap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/range.h"

#define N 2000

static uint64_t rng = 88172645463325252u;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Checks parent links, the red-black rules (no red node with a red child, the same number of
 * black nodes on every path) and both summaries; returns the black height. */
static int check(struct san_tree_node *n, struct san_tree_node *parent, uint64_t *max_len,
                 uint64_t *max_end)
{
    if (!n) {
        *max_len = *max_end = 0;
        return 1;
    }
    assert_ptr_equal(n->parent, parent);
    if (!parent)
        assert_false(n->red);
    if (n->red) {
        assert_false(n->left && n->left->red);
        assert_false(n->right && n->right->red);
    }
    uint64_t ll, le, rl, re;
    int hl = check(n->left, n, &ll, &le), hr = check(n->right, n, &rl, &re);
    assert_int_equal(hl, hr);
    struct san_range *r = san_range_of(n);
    uint64_t ml = r->len, me = san_range_end(r);
    ml = ll > ml ? ll : ml;
    ml = rl > ml ? rl : ml;
    me = le > me ? le : me;
    me = re > me ? re : me;
    assert_int_equal(r->max_len, ml);
    assert_int_equal(r->max_end, me);
    *max_len = ml;
    *max_end = me;
    return hl + !n->red;
}

static void test_random_against_model(void **state)
{
    (void)state;
    static struct san_range nodes[N];
    static bool in[N];
    struct san_tree t;
    san_range_tree_init(&t);

    for (int step = 0; step < 20000; step++) {
        int i = (int)(rnd() % N);
        if (in[i] && rnd() % 4 == 0) {
            /* Change a length in place: summaries must follow (san_range_changed stops early
             * once they come out unchanged, so a stale one would show up in check()). */
            nodes[i].len = rnd() % 3 ? 1 + rnd() % 500 : 1 + rnd() % 5000;
            san_range_changed(&t, &nodes[i]);
        } else if (in[i]) {
            san_range_erase(&t, &nodes[i]);
            in[i] = false;
        } else {
            nodes[i].start = rnd() % 100000;
            nodes[i].len = 1 + rnd() % 500;
            san_range_insert(&t, &nodes[i]);
            in[i] = true;
        }
        if (step % 97 == 0 || step < 500) {
            uint64_t a, b;
            check(t.root, NULL, &a, &b);
        }
        /* Overlap query against brute force. */
        uint64_t qs = rnd() % 100000, ql = 1 + rnd() % 300;
        struct san_range *want = NULL;
        size_t count = 0;
        for (int k = 0; k < N; k++)
            if (in[k] && nodes[k].start < qs + ql && san_range_end(&nodes[k]) > qs) {
                count++;
                if (!want || nodes[k].start < want->start)
                    want = &nodes[k];
            }
        struct san_range *got = san_range_first_overlap(&t, qs, ql);
        if (!want) {
            assert_null(got);
        } else {
            assert_non_null(got);
            assert_int_equal(got->start, want->start);
        }
        size_t seen = 0;
        for (struct san_range *r = got; r; r = san_range_next_overlap(r, qs, ql))
            seen++;
        assert_int_equal(seen, count);
    }
    /* In-order walk is sorted and complete. */
    size_t count = 0;
    uint64_t last = 0;
    for (struct san_range *r = san_range_first(&t); r; r = san_range_next(r)) {
        assert_true(r->start >= last);
        last = r->start;
        count++;
    }
    assert_int_equal(count, t.count);
    size_t back = 0;
    for (struct san_range *r = san_range_last(&t); r; r = san_range_prev(r))
        back++;
    assert_int_equal(back, count);
}

static void test_floor_and_lookup(void **state)
{
    (void)state;
    struct san_range r[3] = {
        {.start = 10, .len = 5}, {.start = 20, .len = 5}, {.start = 30, .len = 1}};
    struct san_tree t;
    san_range_tree_init(&t);
    for (int i = 0; i < 3; i++)
        san_range_insert(&t, &r[i]);
    assert_null(san_range_floor(&t, 9));
    assert_ptr_equal(san_range_floor(&t, 17), &r[0]);
    assert_null(san_range_lookup(&t, 17));
    assert_ptr_equal(san_range_lookup(&t, 24), &r[1]);
    assert_ptr_equal(san_range_lookup(&t, 30), &r[2]);
    assert_null(san_range_lookup(&t, 31));
    assert_int_equal(r[1].max_len, 5); /* root after three inserts is the middle one */
}

/* Red-black rules and max_len (inert ranges left out) of a disjoint tree; returns max_len. */
static uint64_t check_disjoint_at(struct san_tree_node *n, struct san_tree_node *parent, int *bh)
{
    if (!n) {
        *bh = 1;
        return 0;
    }
    assert_ptr_equal(n->parent, parent);
    if (n->red) {
        assert_false(n->left && n->left->red);
        assert_false(n->right && n->right->red);
    }
    int bl, br;
    uint64_t l = check_disjoint_at(n->left, n, &bl), r = check_disjoint_at(n->right, n, &br);
    assert_int_equal(bl, br);
    struct san_range *x = san_range_of(n);
    uint64_t m = n->user & SAN_RANGE_INERT ? 0 : x->len;
    m = l > m ? l : m;
    m = r > m ? r : m;
    assert_int_equal(x->max_len, m);
    *bh = bl + !n->red;
    return m;
}

static void check_disjoint(struct san_tree_node *root, struct san_tree_node *parent)
{
    int bh;
    if (root)
        assert_false(root->red);
    check_disjoint_at(root, parent, &bh);
}

/* A tree of disjoint ranges keeps max_len only; overlap queries still match brute force. */
static void test_disjoint(void **state)
{
    (void)state;
    enum { SLOTS = 1000, SLOT = 100 };
    static struct san_range nodes[SLOTS];
    static bool in[SLOTS];
    struct san_tree t;
    san_range_tree_init_disjoint(&t);
    assert_true(san_range_tree_is_disjoint(&t));

    for (int step = 0; step < 20000; step++) {
        int i = (int)(rnd() % SLOTS);
        if (in[i] && rnd() % 3 == 0) {
            nodes[i].len = 1 + rnd() % (SLOT / 2); /* stays inside its slot */
            san_range_changed(&t, &nodes[i]);
        } else if (in[i]) {
            san_range_erase(&t, &nodes[i]);
            in[i] = false;
        } else {
            nodes[i].start = (uint64_t)i * SLOT + rnd() % (SLOT / 2);
            nodes[i].len = 1 + rnd() % (SLOT / 2);
            /* Half of them placed next to a known neighbour, some inert (not in max_len). */
            struct san_range *at = san_range_floor(&t, nodes[i].start);
            struct san_range *first = san_range_first(&t);
            if (rnd() % 2 && (at || first)) {
                nodes[i].node.user = rnd() % 2 ? SAN_RANGE_INERT : 0;
                if (at)
                    san_range_insert_after(&t, at, &nodes[i]);
                else
                    san_range_insert_before(&t, first, &nodes[i]);
            } else {
                nodes[i].node.user = SAN_RANGE_INERT; /* cleared by a plain insert */
                san_range_insert(&t, &nodes[i]);
                assert_int_equal(nodes[i].node.user, 0);
            }
            in[i] = true;
        }
        struct san_range *root = san_range_of(t.root);
        uint64_t max_len = 0;
        for (int k = 0; k < SLOTS; k++)
            if (in[k] && !(nodes[k].node.user & SAN_RANGE_INERT) && nodes[k].len > max_len)
                max_len = nodes[k].len;
        assert_int_equal(root ? root->max_len : 0, max_len);
        uint64_t qs = rnd() % (SLOTS * SLOT), ql = 1 + rnd() % 300;
        struct san_range *want = NULL;
        for (int k = 0; k < SLOTS && !want; k++)
            if (in[k] && nodes[k].start < qs + ql && san_range_end(&nodes[k]) > qs)
                want = &nodes[k];
        assert_ptr_equal(san_range_first_overlap(&t, qs, ql), want);
        if (step % 50 == 0)
            check_disjoint(t.root, NULL);
    }
}

/* Gaps (the parts of a query no range covers) against a bitmap of covered points, on trees of
 * nested and overlapping ranges and on disjoint trees; gaps come in order, never empty, never
 * adjacent. */
static void test_gaps(void **state)
{
    (void)state;
    enum { SPACE = 2000, RANGES = 60 };
    static struct san_range nodes[RANGES];
    static bool covered[SPACE];
    for (int round = 0; round < 400; round++) {
        struct san_tree t;
        bool disjoint = round % 2;
        if (disjoint)
            san_range_tree_init_disjoint(&t);
        else
            san_range_tree_init(&t);
        memset(covered, 0, sizeof(covered));
        int n = (int)(rnd() % RANGES);
        for (int i = 0; i < n; i++) {
            if (disjoint) { /* slot i of SPACE / RANGES points */
                uint64_t slot = SPACE / RANGES;
                nodes[i].start = (uint64_t)i * slot + rnd() % (slot / 2);
                nodes[i].len = 1 + rnd() % (slot / 2);
            } else {
                nodes[i].start = rnd() % SPACE;
                nodes[i].len = 1 + rnd() % (rnd() % 4 ? 40 : 400);
                if (nodes[i].start + nodes[i].len > SPACE)
                    nodes[i].len = SPACE - nodes[i].start;
            }
            san_range_insert(&t, &nodes[i]);
            for (uint64_t p = nodes[i].start; p < san_range_end(&nodes[i]); p++)
                covered[p] = true;
        }
        for (int q = 0; q < 20; q++) {
            uint64_t qs = rnd() % SPACE, qe = qs + rnd() % (SPACE - qs + 1);
            uint64_t at = qs, prev_end = UINT64_MAX;
            struct san_range_gaps g;
            for (san_range_gaps_init(&g, &t, qs, qe); san_range_gaps_next(&g);) {
                assert_true(g.len > 0);
                assert_true(g.start >= at && g.start + g.len <= qe);
                assert_true(g.start != prev_end); /* two gaps never touch */
                for (uint64_t p = at; p < g.start; p++)
                    assert_true(covered[p]);
                for (uint64_t p = g.start; p < g.start + g.len; p++)
                    assert_false(covered[p]);
                at = prev_end = g.start + g.len;
            }
            for (uint64_t p = at; p < qe; p++)
                assert_true(covered[p]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_floor_and_lookup),
        cmocka_unit_test(test_disjoint),
        cmocka_unit_test(test_gaps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
