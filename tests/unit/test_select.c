#include "check.h"
#include "merge/select.h"

int main(void)
{
    return mm_check_report();
}
