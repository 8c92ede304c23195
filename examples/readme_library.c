/* readme_library.c -- the README's first program: open (or create) a store, append an
 * event, read its stream back. Usage: readme_library [DIR] (default ./shop). */
#include <annal.h>
#include <stdio.h>

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "./shop";
    annal_db_opts opts;
    annal_db_opts_init(&opts);
    opts.flags = ANNAL_OPEN_CREATE;
    annal_db *db;
    annal_err rc = annal_db_open(dir, &opts, &db);
    if (rc != ANNAL_OK) {
        fprintf(stderr, "cannot open %s: %s\n", dir, annal_strerror(rc));
        return 1;
    }

    annal_event_data ev = {.type = "OrderPlaced", .data = "{\"amount\":200}", .data_len = 14};
    annal_append_result res;
    rc = annal_append(db, "order-1", ANNAL_EXPECT_NO_STREAM, &ev, 1, &res);
    if (rc == ANNAL_ECONFLICT) /* someone else wrote order-1 first: res.revision says where */
        printf("order-1 already exists (revision %lld)\n", (long long)res.revision);
    else if (rc != ANNAL_OK)
        fprintf(stderr, "append: %s\n", annal_db_errmsg(db));
    else
        printf("appended at position %llu\n", (unsigned long long)res.first_position);

    annal_iter *it;
    const annal_event *e;
    rc = annal_read_stream(db, "order-1", 0, 0, 0, &it);
    while (rc == ANNAL_OK && (rc = annal_iter_next(it, &e)) == ANNAL_OK)
        printf("%llu %s %.*s\n", (unsigned long long)e->revision, e->type, (int)e->data_len,
               (const char *)e->data);
    annal_iter_close(it);
    annal_db_close(db);
    return rc == ANNAL_END ? 0 : 1;
}
