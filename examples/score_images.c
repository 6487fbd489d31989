/* Embedding libsemgir from plain C: open an export directory, score files one by one and as one
 * batch, print a line per image. Build: cc score_images.c -Iinclude -Lbuild/native -lsemgir
 * Run:   score_images EXPORT_DIR IMAGE...   (exit 0 when every image scored, 3 when some failed) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "semgir.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s EXPORT_DIR IMAGE...\n", argv[0]);
        return 2;
    }
    printf("libsemgir %s (API %d, runtimes %s)\n", semgir_version(), (int)semgir_api_version(), semgir_runtimes());

    semgir_options opt;
    semgir_options_init(&opt);
    opt.intra_threads = 1;
    semgir_engine *eng = NULL;
    semgir_status st = semgir_open(argv[1], &opt, &eng);
    if (st != SEMGIR_OK) {
        fprintf(stderr, "cannot open %s: %s (%s)\n", argv[1], semgir_last_error(), semgir_status_name(st));
        return 1;
    }
    printf("model %s on %s, threshold %.4f\n", semgir_engine_model_version(eng), semgir_engine_runtime(eng),
           semgir_engine_threshold(eng));

    size_t n = (size_t)(argc - 2);
    semgir_result *batch = calloc(n, sizeof *batch);
    if (!batch) return 1;
    st = semgir_score_files(eng, (const char *const *)(argv + 2), n, batch);
    int failed = 0, mismatched = 0;
    for (size_t i = 0; i < n; ++i) {
        semgir_result one;
        semgir_score_file(eng, argv[2 + i], &one);
        if (batch[i].status != SEMGIR_OK) {
            ++failed;
            printf("%s\terror\t%s\n", argv[2 + i], batch[i].error);
            if (one.status != batch[i].status) ++mismatched;
            continue;
        }
        printf("%s\tp_ai=%.6f\t%s\t%dx%d\n", argv[2 + i], batch[i].p_ai,
               batch[i].label == SEMGIR_LABEL_AI ? "ai" : "real", (int)batch[i].width, (int)batch[i].height);
        if (one.status != SEMGIR_OK || fabs(one.p_ai - batch[i].p_ai) > 1e-5) ++mismatched;  /* batch == single */
    }
    free(batch);
    semgir_close(eng);
    if (mismatched) {
        fprintf(stderr, "%d results differ between batch and single scoring\n", mismatched);
        return 1;
    }
    return failed ? 3 : 0;
}
