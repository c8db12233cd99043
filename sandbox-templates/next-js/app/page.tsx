import { Button } from "@/components/ui/button";
import {
  Card,
  CardContent,
  CardDescription,
  CardHeader,
  CardTitle,
} from "@/components/ui/card";

export default function Home() {
  return (
    <main className="flex min-h-screen items-center justify-center p-8">
      <Card className="w-full max-w-md">
        <CardHeader>
          <CardTitle>Your app is getting ready</CardTitle>
          <CardDescription>
            Describe what you want to build and CodeKraft will write it here.
          </CardDescription>
        </CardHeader>
        <CardContent>
          <Button disabled>Waiting for the first change…</Button>
        </CardContent>
      </Card>
    </main>
  );
}
