/*
 * Minimum-cost full matching of a sparse bipartite graph: every row is matched.
 *
 * Successive shortest augmenting paths (Jonker-Volgenant style dual updates) with a
 * binary-heap Dijkstra over reduced costs c(i,j) - u(i) - v(j). Integer costs, exact.
 * Row potentials are implicit: u(i) = c(i, m(i)) - v(m(i)) for a matched row i, 0 for
 * the free row being augmented. Column potentials only decrease from 0, so reduced costs
 * of a free row's edges stay >= 0. On geometric graphs (boundary pixels within a few
 * pixels) each Dijkstra stops at the nearest free column, so the work is local.
 *
 * Returns 0 on success, 1 if some row cannot be matched, 2 if memory ran out.
 * Pure-Python oracle: scipy's min_weight_full_bipartite_matching (see correspond.py).
 */
#include <stdint.h>
#include <stdlib.h>

typedef struct { int64_t key; int32_t col; } Item;

static void heap_push(Item *heap, int64_t *size, int64_t key, int32_t col) {
    int64_t k = (*size)++;
    while (k > 0) {
        int64_t parent = (k - 1) / 2;
        if (heap[parent].key <= key) break;
        heap[k] = heap[parent];
        k = parent;
    }
    heap[k].key = key;
    heap[k].col = col;
}

static Item heap_pop(Item *heap, int64_t *size) {
    Item top = heap[0];
    Item last = heap[--(*size)];
    int64_t k = 0;
    for (;;) {
        int64_t child = 2 * k + 1;
        if (child >= *size) break;
        if (child + 1 < *size && heap[child + 1].key < heap[child].key) child++;
        if (heap[child].key >= last.key) break;
        heap[k] = heap[child];
        k = child;
    }
    if (*size > 0) heap[k] = last;
    return top;
}

int pag_assign_full(int32_t n_rows, int32_t n_cols, const int64_t *indptr, const int32_t *indices,
                    const int64_t *cost, int32_t *row_to_col) {
    const int64_t INF = INT64_MAX / 4;
    int64_t nnz = indptr[n_rows];
    int32_t *col_to_row = malloc(sizeof(int32_t) * (n_cols > 0 ? n_cols : 1));
    int64_t *v = calloc(n_cols > 0 ? n_cols : 1, sizeof(int64_t));
    int64_t *dist = malloc(sizeof(int64_t) * (n_cols > 0 ? n_cols : 1));
    int32_t *pred = malloc(sizeof(int32_t) * (n_cols > 0 ? n_cols : 1));
    int64_t *pred_cost = malloc(sizeof(int64_t) * (n_cols > 0 ? n_cols : 1));
    char *done = calloc(n_cols > 0 ? n_cols : 1, 1);
    int64_t *matched_cost = malloc(sizeof(int64_t) * (n_rows > 0 ? n_rows : 1));
    int32_t *touched = malloc(sizeof(int32_t) * (n_cols > 0 ? n_cols : 1));
    Item *heap = malloc(sizeof(Item) * (nnz + 1));
    int status = 0;
    if (!col_to_row || !v || !dist || !pred || !pred_cost || !done || !matched_cost || !touched || !heap) {
        status = 2;
        goto cleanup;
    }
    for (int32_t j = 0; j < n_cols; j++) { col_to_row[j] = -1; dist[j] = INF; }
    for (int32_t i = 0; i < n_rows; i++) row_to_col[i] = -1;
    /* Greedy start: a row whose cheapest column is free takes it. With v = 0 and
     * u(i) = its row minimum, every reduced cost stays >= 0 and matched edges are tight. */
    for (int32_t i = 0; i < n_rows; i++) {
        int64_t best = -1;
        for (int64_t e = indptr[i]; e < indptr[i + 1]; e++) {
            if (best < 0 || cost[e] < cost[best]) best = e;
        }
        if (best >= 0 && col_to_row[indices[best]] < 0) {
            row_to_col[i] = indices[best];
            col_to_row[indices[best]] = i;
            matched_cost[i] = cost[best];
        }
    }

    for (int32_t s = 0; s < n_rows; s++) {
        if (row_to_col[s] >= 0) continue;
        int64_t heap_size = 0, n_touched = 0;
        int32_t end = -1;
        int64_t final_dist = 0;
        for (int64_t e = indptr[s]; e < indptr[s + 1]; e++) {
            int32_t j = indices[e];
            int64_t d = cost[e] - v[j];
            if (d < dist[j]) {
                if (dist[j] == INF) touched[n_touched++] = j;
                dist[j] = d; pred[j] = s; pred_cost[j] = cost[e];
                heap_push(heap, &heap_size, d, j);
            }
        }
        while (heap_size > 0) {
            Item top = heap_pop(heap, &heap_size);
            int32_t j = top.col;
            if (done[j] || top.key != dist[j]) continue;
            done[j] = 1;
            if (col_to_row[j] < 0) { end = j; final_dist = dist[j]; break; }
            int32_t i = col_to_row[j];
            int64_t u_i = matched_cost[i] - v[j];
            for (int64_t e = indptr[i]; e < indptr[i + 1]; e++) {
                int32_t k = indices[e];
                if (done[k]) continue;
                int64_t d = dist[j] + cost[e] - u_i - v[k];
                if (d < dist[k]) {
                    if (dist[k] == INF) touched[n_touched++] = k;
                    dist[k] = d; pred[k] = i; pred_cost[k] = cost[e];
                    heap_push(heap, &heap_size, d, k);
                }
            }
        }
        if (end < 0) {
            status = 1;
        } else {
            /* Dual update on finalised columns, then flip the path. */
            for (int64_t t = 0; t < n_touched; t++) {
                int32_t j = touched[t];
                if (done[j] && j != end) v[j] += dist[j] - final_dist;
            }
            int32_t j = end;
            for (;;) {
                int32_t i = pred[j];
                int32_t next = row_to_col[i];
                row_to_col[i] = j;
                col_to_row[j] = i;
                matched_cost[i] = pred_cost[j];
                if (i == s) break;
                j = next;
            }
        }
        for (int64_t t = 0; t < n_touched; t++) {
            dist[touched[t]] = INF;
            done[touched[t]] = 0;
        }
        if (status) break;
    }
cleanup:
    free(col_to_row); free(v); free(dist); free(pred); free(pred_cost);
    free(done); free(matched_cost); free(touched); free(heap);
    return status;
}

/*
 * Maximum-cardinality matching (Hopcroft-Karp, iterative DFS). row_match / col_match
 * receive the partner or -1. Returns the matching size, or -1 if memory ran out.
 */
int64_t pag_max_matching(int32_t n_rows, int32_t n_cols, const int64_t *indptr, const int32_t *indices,
                         int32_t *row_match, int32_t *col_match) {
    const int32_t INF = INT32_MAX;
    int32_t *dist = malloc(sizeof(int32_t) * (n_rows > 0 ? n_rows : 1));
    int32_t *queue = malloc(sizeof(int32_t) * (n_rows > 0 ? n_rows : 1));
    int32_t *stack = malloc(sizeof(int32_t) * (n_rows > 0 ? n_rows : 1));
    int32_t *chosen = malloc(sizeof(int32_t) * (n_rows > 0 ? n_rows : 1));
    int64_t *next_edge = malloc(sizeof(int64_t) * (n_rows > 0 ? n_rows : 1));
    int64_t size = 0;
    if (!dist || !queue || !stack || !chosen || !next_edge) { size = -1; goto cleanup; }
    for (int32_t r = 0; r < n_rows; r++) row_match[r] = -1;
    for (int32_t c = 0; c < n_cols; c++) col_match[c] = -1;
    for (;;) {
        /* BFS layers from the free rows over alternating paths. */
        int32_t head = 0, tail = 0;
        int found = 0;
        for (int32_t r = 0; r < n_rows; r++) {
            if (row_match[r] < 0) { dist[r] = 0; queue[tail++] = r; } else dist[r] = INF;
        }
        while (head < tail) {
            int32_t u = queue[head++];
            for (int64_t e = indptr[u]; e < indptr[u + 1]; e++) {
                int32_t w = col_match[indices[e]];
                if (w < 0) found = 1;
                else if (dist[w] == INF) { dist[w] = dist[u] + 1; queue[tail++] = w; }
            }
        }
        if (!found) break;
        /* Vertex-disjoint augmenting paths along the layers. */
        for (int32_t r = 0; r < n_rows; r++) next_edge[r] = indptr[r];
        for (int32_t s = 0; s < n_rows; s++) {
            if (row_match[s] >= 0) continue;
            int32_t depth = 0;
            stack[depth++] = s;
            while (depth > 0) {
                int32_t u = stack[depth - 1];
                if (next_edge[u] == indptr[u + 1]) { dist[u] = INF; depth--; continue; }
                int32_t v = indices[next_edge[u]++];
                int32_t w = col_match[v];
                if (w < 0) {
                    /* Flip the path: the top row takes v, each row below its chosen column. */
                    row_match[u] = v; col_match[v] = u;
                    for (int32_t k = depth - 2; k >= 0; k--) {
                        int32_t r = stack[k], c = chosen[r];
                        row_match[r] = c; col_match[c] = r;
                    }
                    size++;
                    break;
                }
                if (dist[w] != INF && dist[w] == dist[u] + 1) { chosen[u] = v; stack[depth++] = w; }
            }
        }
    }
cleanup:
    free(dist); free(queue); free(stack); free(chosen); free(next_edge);
    return size;
}

/*
 * Alternating-path reach from the free rows: rows reached (row_seen) and the columns
 * their edges lead to (col_seen); from a column the walk continues to its matched row.
 * Run on the transposed graph for the reach from the free columns. Returns -1 if
 * memory ran out, else the number of rows reached.
 */
int64_t pag_alternating_reach(int32_t n_rows, const int64_t *indptr, const int32_t *indices,
                              const int32_t *row_match, const int32_t *col_match,
                              uint8_t *row_seen, uint8_t *col_seen) {
    int32_t *queue = malloc(sizeof(int32_t) * (n_rows > 0 ? n_rows : 1));
    if (!queue) return -1;
    int32_t head = 0, tail = 0;
    for (int32_t r = 0; r < n_rows; r++) {
        if (row_match[r] < 0) { row_seen[r] = 1; queue[tail++] = r; }
    }
    while (head < tail) {
        int32_t u = queue[head++];
        for (int64_t e = indptr[u]; e < indptr[u + 1]; e++) {
            int32_t c = indices[e];
            col_seen[c] = 1;
            int32_t w = col_match[c];
            if (w >= 0 && !row_seen[w]) { row_seen[w] = 1; queue[tail++] = w; }
        }
    }
    free(queue);
    return tail;
}
