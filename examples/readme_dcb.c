/* readme_dcb.c -- the README's Dynamic Consistency Boundaries example: usernames must be
 * unique across all accounts, a rule no single stream holds. A claim reads the events
 * tagged with the name, decides, and appends on condition that nothing about the name came
 * after what it read. Usage: readme_dcb [DIR] (default ./shop). */
#include <annal.h>
#include <stdio.h>
#include <string.h>

static const char *const types[] = {"UsernameClaimed", "UsernameReleased"};

/* Read the events about name: is it taken, and up to which position did we read? */
static annal_err read_name(annal_db *db, const annal_query *q, int *taken, uint64_t *after) {
    annal_iter *it;
    const annal_event *e;
    annal_err rc = annal_read_query(db, q, 0, 0, 0, &it);
    *taken = 0;
    *after = ANNAL_AFTER_NONE; /* nothing read: the condition then covers every position */
    while (rc == ANNAL_OK && (rc = annal_iter_next(it, &e)) == ANNAL_OK) {
        *taken = strcmp(e->type, "UsernameClaimed") == 0;
        *after = e->position;
    }
    annal_iter_close(it);
    return rc == ANNAL_END ? ANNAL_OK : rc;
}

/* Append type for name, tagged, if nothing about name was appended after `after`. */
static annal_err append_if(annal_db *db, const annal_query *q, const char *type, const char *tag,
                           uint64_t after, uint64_t *conflict) {
    annal_event_data ev = {.type = type, .data = "{}", .data_len = 2};
    annal_tag_list tags = {.tags = &tag, .n = 1};
    annal_condition cond = {.query = q, .after = after};
    annal_append_result res;
    return annal_append_if(db, &ev, &tags, 1, &cond, &res, conflict);
}

static void claim(annal_db *db, const char *name) {
    char tag[64];
    snprintf(tag, sizeof tag, "username:%s", name);
    const char *tagp = tag;
    annal_query_item item = {.types = types, .ntypes = 2, .tags = &tagp, .ntags = 1};
    annal_query q = {.items = &item, .nitems = 1};
    int taken;
    uint64_t after, conflict;
    annal_err rc = read_name(db, &q, &taken, &after);
    if (rc == ANNAL_OK && taken) {
        printf("%s: taken\n", name);
        return;
    }
    if (rc == ANNAL_OK) rc = append_if(db, &q, "UsernameClaimed", tag, after, &conflict);
    if (rc == ANNAL_ECONDITION) /* another claim got in between: decide again */
        printf("%s: claimed by someone else meanwhile (event %llu)\n", name,
               (unsigned long long)conflict);
    else if (rc != ANNAL_OK)
        fprintf(stderr, "%s: %s\n", name, annal_db_errmsg(db));
    else
        printf("%s: claimed\n", name);
}

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
    claim(db, "alice"); /* alice: claimed */
    claim(db, "alice"); /* alice: taken */

    /* Two decisions read "bob is free" at the same time; only the first append wins. */
    const char *tag = "username:bob";
    annal_query_item item = {.types = types, .ntypes = 2, .tags = &tag, .ntags = 1};
    annal_query q = {.items = &item, .nitems = 1};
    int taken;
    uint64_t after, conflict = 0;
    read_name(db, &q, &taken, &after);
    annal_err first = append_if(db, &q, "UsernameClaimed", tag, after, &conflict);
    annal_err second = append_if(db, &q, "UsernameClaimed", tag, after, &conflict);
    printf("bob: first %s, second %s (event %llu matched)\n", annal_errname(first),
           annal_errname(second), (unsigned long long)conflict);

    /* A released name can be claimed again. */
    read_name(db, &q, &taken, &after);
    append_if(db, &q, "UsernameReleased", tag, after, &conflict);
    claim(db, "bob");
    annal_db_close(db);
    return 0;
}
