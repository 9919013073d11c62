// Placeholder until the CLI lands (replaced in the CLI commit).
int main() { return 0; }
