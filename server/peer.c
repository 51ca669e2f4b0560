/*
 * peer.c - the uid of a Unix-socket peer (SO_PEERCRED), for unix_admin_uids.
 *
 * Kept apart because struct ucred needs _GNU_SOURCE, which the rest of the server
 * does without.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/types.h>

int dsc__peer_uid(int fd, uid_t *uid);

/* Fill *uid with the peer's uid; 0 on success, -1 when the kernel cannot tell. */
int dsc__peer_uid(int fd, uid_t *uid) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    *uid = cred.uid;
    return 0;
}
